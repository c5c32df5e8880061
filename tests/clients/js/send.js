'use strict';
// A small shop instrumented with the OpenTelemetry JavaScript SDK, exporting over OTLP to
// the sidecar; tests/clients/test_js_sdk.py runs it once per protocol.
//
//   node send.js --protocol grpc|http/protobuf|http/json --endpoint http://127.0.0.1:PORT
//                [--service js-shop] [--duration-ms 3000] [--export-interval-ms 400]
//
// For `grpc` the endpoint is the server's address; for the HTTP protocols its base URL
// (/v1/metrics and /v1/traces are appended). For --duration-ms it records a gauge, a
// counter and a histogram, exported every --export-interval-ms, and a span every 25 ms;
// then it shuts both providers down (which flushes them) and prints one JSON line: what
// the SDK exported and the sidecar acknowledged. It exits 1 if any export failed (each
// failure is logged on stderr), 2 on bad arguments.

const { parseArgs } = require('node:util');
const { diag, DiagConsoleLogger, DiagLogLevel, SpanKind, SpanStatusCode } = require('@opentelemetry/api');
const { ExportResultCode } = require('@opentelemetry/core');
const { resourceFromAttributes } = require('@opentelemetry/resources');
const { ATTR_SERVICE_NAME } = require('@opentelemetry/semantic-conventions');
const { MeterProvider, PeriodicExportingMetricReader } = require('@opentelemetry/sdk-metrics');
const { BasicTracerProvider, BatchSpanProcessor } = require('@opentelemetry/sdk-trace-base');

const SPAN_EVERY_MS = 25;

const EXPORTERS = {
  grpc: {
    metrics: () => require('@opentelemetry/exporter-metrics-otlp-grpc').OTLPMetricExporter,
    traces: () => require('@opentelemetry/exporter-trace-otlp-grpc').OTLPTraceExporter,
    path: '',
  },
  'http/protobuf': {
    metrics: () => require('@opentelemetry/exporter-metrics-otlp-proto').OTLPMetricExporter,
    traces: () => require('@opentelemetry/exporter-trace-otlp-proto').OTLPTraceExporter,
    path: '/v1/',
  },
  'http/json': {
    metrics: () => require('@opentelemetry/exporter-metrics-otlp-http').OTLPMetricExporter,
    traces: () => require('@opentelemetry/exporter-trace-otlp-http').OTLPTraceExporter,
    path: '/v1/',
  },
};

class UsageError extends Error {}

function options() {
  const { values } = parseArgs({
    options: {
      protocol: { type: 'string' },
      endpoint: { type: 'string' },
      service: { type: 'string', default: 'js-shop' },
      'duration-ms': { type: 'string', default: '3000' },
      'export-interval-ms': { type: 'string', default: '400' },
    },
  });
  if (!(values.protocol in EXPORTERS) || !values.endpoint) {
    throw new UsageError(`--protocol must be one of ${Object.keys(EXPORTERS).join(', ')} and ` +
      `--endpoint is required; got --protocol ${values.protocol} --endpoint ${values.endpoint}`);
  }
  return {
    protocol: values.protocol,
    endpoint: values.endpoint.replace(/\/+$/, ''),
    service: values.service,
    durationMs: Number(values['duration-ms']),
    exportIntervalMs: Number(values['export-interval-ms']),
  };
}

/** Wrap ``exporter.export`` to count what the server acknowledged, and log every failure. */
function counted(exporter, signal, countItems, tally) {
  const exportBatch = exporter.export.bind(exporter);
  exporter.export = (items, resultCallback) => {
    exportBatch(items, (result) => {
      if (result.code === ExportResultCode.SUCCESS) {
        const n = countItems(items);
        tally[signal].items += n;
        if (n > 0) tally[signal].exports += 1; // the sidecar counts empty requests apart
      } else {
        tally.failures += 1;
        console.error(`${signal} export failed: ${result.error ? result.error.stack || result.error : 'unknown error'}`);
      }
      resultCallback(result);
    });
  };
  return exporter;
}

function metricPoints(resourceMetrics) {
  let points = 0;
  for (const scope of resourceMetrics.scopeMetrics) {
    for (const metric of scope.metrics) points += metric.dataPoints.length;
  }
  return points;
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function main() {
  const opts = options();
  diag.setLogger(new DiagConsoleLogger(), DiagLogLevel.WARN);
  const tally = { metrics: { exports: 0, items: 0 }, traces: { exports: 0, items: 0 }, failures: 0 };
  const exporters = EXPORTERS[opts.protocol];
  const url = (signal) => (exporters.path ? `${opts.endpoint}${exporters.path}${signal}` : opts.endpoint);
  const MetricExporter = exporters.metrics();
  const TraceExporter = exporters.traces();

  const resource = resourceFromAttributes({
    [ATTR_SERVICE_NAME]: opts.service,
    'service.instance.id': `${opts.service}-${process.pid}`,
  });
  const reader = new PeriodicExportingMetricReader({
    exporter: counted(new MetricExporter({ url: url('metrics') }), 'metrics', metricPoints, tally),
    exportIntervalMillis: opts.exportIntervalMs,
    exportTimeoutMillis: opts.exportIntervalMs, // may not exceed the interval
  });
  const meters = new MeterProvider({ resource, readers: [reader] });
  const tracers = new BasicTracerProvider({
    resource,
    spanProcessors: [new BatchSpanProcessor(
      counted(new TraceExporter({ url: url('traces') }), 'traces', (spans) => spans.length, tally),
      { scheduledDelayMillis: opts.exportIntervalMs, maxQueueSize: 10_000, maxExportBatchSize: 512 },
    )],
  });

  const meter = meters.getMeter('js-shop');
  let queueDepth = 40;
  meter.createObservableGauge('shop.queue.depth', { unit: '{item}' })
    .addCallback((result) => result.observe(queueDepth, { queue: 'orders' }));
  const orders = meter.createCounter('shop.orders', { unit: '{order}' });
  const checkout = meter.createHistogram('shop.checkout.duration', { unit: 'ms' });
  const tracer = tracers.getTracer('js-shop');

  let tick = 0;
  let sentSpans = 0;
  const start = Date.now();
  while (Date.now() - start < opts.durationMs) {
    tick += 1;
    queueDepth = 40 + (tick % 7);
    orders.add(2, { 'http.route': '/checkout' });
    const tookMs = 20 + (tick % 11);
    checkout.record(tookMs, { 'http.route': '/checkout' });
    const name = tick % 4 === 0 ? 'POST /checkout' : 'GET /cart';
    const span = tracer.startSpan(name, { kind: SpanKind.SERVER, startTime: Date.now() - tookMs });
    span.setAttribute('http.route', name.split(' ')[1]);
    if (tick % 20 === 0) span.setStatus({ code: SpanStatusCode.ERROR, message: 'out of stock' });
    span.end();
    sentSpans += 1;
    await sleep(SPAN_EVERY_MS);
  }
  // Shutting down flushes: the batch processor's queue and a last metric collection.
  await tracers.shutdown();
  await meters.shutdown();
  const summary = {
    protocol: opts.protocol,
    service: opts.service,
    spans_started: sentSpans,
    metric_exports: tally.metrics.exports, // non-empty ones
    metric_points: tally.metrics.items,
    span_exports: tally.traces.exports, // non-empty ones
    spans: tally.traces.items,
    failed_exports: tally.failures,
  };
  process.stdout.write(`${JSON.stringify(summary)}\n`);
  if (tally.traces.items !== sentSpans) {
    console.error(`${sentSpans} spans ended but ${tally.traces.items} were exported`);
    return 1;
  }
  return tally.failures === 0 ? 0 : 1;
}

main().then(
  (code) => { process.exitCode = code; },
  (error) => {
    console.error(error instanceof UsageError ? error.message : error.stack);
    process.exitCode = error instanceof UsageError ? 2 : 1;
  },
);
