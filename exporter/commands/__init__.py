"""CLI commands beyond ``run``: backtest and demo, with what they need."""
