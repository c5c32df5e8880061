"""The exporter's exception root and its two kinds of fatal startup error."""

from __future__ import annotations


class ExporterError(Exception):
    """Root of every error the exporter raises on purpose."""


class ConfigError(ExporterError):
    """The configuration is invalid; the message lists every problem, one per line.

    Parameters
    ----------
    source
        Where the configuration came from (a file path, or ``None`` for defaults only).
    problems
        One ``path: message`` line per problem, in the order they were found.
    """

    def __init__(self, source: str | None, problems: list[str]) -> None:
        self.source = source
        self.problems = list(problems)
        where = f" in {source}" if source else ""
        count = len(self.problems)
        noun = "error" if count == 1 else "errors"
        lines = [f"invalid configuration{where} ({count} {noun}):"]
        lines.extend(f"  {problem}" for problem in self.problems)
        super().__init__("\n".join(lines))


class StartupError(ExporterError):
    """A component could not start (e.g. its endpoint is taken); names the component."""
