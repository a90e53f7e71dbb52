import { Type } from '@sinclair/typebox'

/** Prometheus text exposition format 0.0.4, as prom-client renders it. */
export const PROMETHEUS_CONTENT_TYPE = 'text/plain; version=0.0.4'

export const MetricsText = Type.String({
  title: 'PrometheusMetrics',
  description: 'Prometheus text exposition format (version 0.0.4)',
  examples: ['# HELP flash_sale_checkout_attempts_total Checkout attempts committed to Postgres ...\n# TYPE flash_sale_checkout_attempts_total counter\nflash_sale_checkout_attempts_total{outcome="accepted"} 42\n']
})

export const metricsSchema = {
  operationId: 'getMetrics',
  summary: 'Prometheus metrics',
  description: 'Process metrics, HTTP request durations by route, checkout attempts by outcome, the current ' +
    'sale\'s sold/held/left items, group-commit queue depth and flushes, 503s by cause and dependency errors.',
  tags: ['ops'],
  response: {
    200: {
      description: 'Metrics in the Prometheus text format',
      content: { [PROMETHEUS_CONTENT_TYPE]: { schema: MetricsText } }
    }
  }
}
