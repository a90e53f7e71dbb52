import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test, type TestContext } from 'node:test'
import { fileURLToPath } from 'node:url'
import { parse as parseYaml } from 'yaml'
import { buildTestApp, checkout, isolatedConfig, purchase, TestClock } from '../support/helpers.js'

/**
 * The operator kit in deploy/: Prometheus alert rules, a scrape example and a Grafana dashboard.
 * promtool (Debian package `prometheus`) checks the files and a real /metrics scrape; every metric
 * the rules and the dashboard query must exist in that scrape.
 */

const root = fileURLToPath(new URL('../..', import.meta.url))
const ALERTS = join(root, 'deploy/prometheus/alerts.yml')
const SCRAPE_CONFIG = join(root, 'deploy/prometheus/prometheus.yml')
const DASHBOARD = join(root, 'deploy/grafana/flash-sale-dashboard.json')

const hasPromtool = spawnSync('promtool', ['--version']).status === 0
const NO_PROMTOOL = 'promtool is not installed (Debian package `prometheus`; .ci/run installs it)'

function promtool (args: string[], input?: string): { status: number | null, output: string } {
  const run = spawnSync('promtool', args, { input, encoding: 'utf8', timeout: 30_000 })
  return { status: run.status, output: `${run.stdout}${run.stderr}` }
}

interface Rule { alert?: string, record?: string, expr: string, labels?: Record<string, string>, annotations?: Record<string, string> }
const rules = (): Rule[] => (parseYaml(readFileSync(ALERTS, 'utf8')) as { groups: Array<{ rules: Rule[] }> }).groups.flatMap((g) => g.rules)

interface Target { expr: string }
interface Panel { type: string, title: string, targets?: Target[], panels?: Panel[] }
interface Dashboard { panels: Panel[], templating: { list: Array<{ name: string, type: string, query: unknown }> } }
const dashboard = (): Dashboard => JSON.parse(readFileSync(DASHBOARD, 'utf8')) as Dashboard

/** Every PromQL expression of the dashboard (panel targets and variable queries), with its template variables filled in. */
function dashboardQueries (): Array<{ where: string, expr: string }> {
  const fill = (expr: string) => expr
    .replaceAll('$__rate_interval', '1m').replaceAll('$job', 'flash-sale').replaceAll('$instance', '.*')
  const board = dashboard()
  const panels = board.panels.flatMap((p) => [p, ...(p.panels ?? [])])
  const queries = panels.flatMap((p) => (p.targets ?? []).map((t) => ({ where: `panel "${p.title}"`, expr: fill(t.expr) })))
  for (const variable of board.templating.list.filter((v) => v.type === 'query')) {
    const query = typeof variable.query === 'string' ? variable.query : (variable.query as { query: string }).query
    // Grafana's label_values(<selector>, <label>): the selector is PromQL.
    const selector = /^label_values\((.*),\s*\w+\)$/.exec(query)?.[1]
    assert.ok(selector !== undefined, `variable ${variable.name}: not a label_values() query: ${query}`)
    queries.push({ where: `variable $${variable.name}`, expr: fill(selector) })
  }
  return queries
}

/** Aggregations, functions' look-alikes and keywords: identifiers in PromQL that are not metric names. */
const PROMQL_WORDS = new Set([
  'sum', 'min', 'max', 'avg', 'group', 'stddev', 'stdvar', 'count', 'count_values', 'bottomk', 'topk', 'quantile', 'limitk', 'limit_ratio',
  'by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'offset', 'bool', 'and', 'or', 'unless', 'atan2', 'inf', 'nan', 'start', 'end'
])

/**
 * The metric names a PromQL expression selects: strings, label matchers, ranges and grouping
 * label lists are dropped first, then every identifier that is not a function call (followed by
 * `(`), a keyword or part of a number or duration is a metric name.
 */
function promqlMetricNames (expr: string): string[] {
  const bare = expr
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/g, '""')
    .replace(/\{[^}]*\}/g, '{}')
    .replace(/\[[^\]]*\]/g, '[]')
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, '$1')
  const names = [...bare.matchAll(/(?<![\w:.])[a-zA-Z_:][\w:]*(?![\w:])(?!\s*\()/g)].map((m) => m[0])
    .filter((name) => !PROMQL_WORDS.has(name.toLowerCase()))
  return [...new Set(names)]
}

/** The series names a scrape can be queried by: each family's (from # TYPE), with a histogram's _bucket/_sum/_count. */
function scrapedNames (text: string): Set<string> {
  const names = new Set<string>()
  for (const [, name, type] of text.matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
    const family = name as string
    if (type === 'histogram') for (const suffix of ['_bucket', '_sum', '_count']) names.add(family + suffix)
    else if (type === 'summary') for (const suffix of ['', '_sum', '_count']) names.add(family + suffix)
    else names.add(family)
  }
  for (const [, name] of text.matchAll(/^([a-zA-Z_:][\w:]*)[{ ]/gm)) names.add(name as string)
  return names
}

/** Series Prometheus makes itself for every target; they are never in /metrics. */
const SYNTHETIC = new Set(['up', 'scrape_duration_seconds', 'scrape_samples_scraped', 'scrape_samples_post_metric_relabeling', 'scrape_series_added'])

/** A real /metrics scrape after a few checkouts (accepted and refused) and a purchase. */
async function scrapeAfterTraffic (t: TestContext): Promise<string> {
  const app = await buildTestApp(t, isolatedConfig(t, { SALE_ITEMS: 20, USER_LIMIT: 3 }), new TestClock(Date.parse('2031-03-04T13:10:00.000Z')))
  const codes: string[] = []
  for (const id of [1, 2]) {
    const res = await checkout(app, `user_id=alice&id=${id}`)
    assert.equal(res.statusCode, 200, res.body)
    codes.push(res.json().code)
  }
  assert.equal((await checkout(app, 'user_id=bob&id=1')).json().error, 'item_reserved')
  assert.equal((await purchase(app, codes[0] as string)).statusCode, 200)
  assert.equal((await app.inject('/no/such/page')).statusCode, 404)
  const res = await app.inject('/metrics')
  assert.equal(res.statusCode, 200)
  return res.body
}

test('the PromQL name extraction finds metric names and nothing else', () => {
  assert.deepEqual(
    promqlMetricNames('sum by (job, le) (rate(a_bucket{x="y}", z=~"b|c"}[5m])) / on(job) group_left(instance) b:rec > 0.5e3 and c offset 5m unless absent(up{job="x"} == 1) or max(d)'),
    ['a_bucket', 'b:rec', 'c', 'up', 'd'])
  assert.deepEqual(promqlMetricNames('histogram_quantile(0.99, sum without (pod) (rate(x_bucket[1m]))) > bool 1'), ['x_bucket'])
})

test('the alert rules and the scrape example pass promtool', { skip: !hasPromtool && NO_PROMTOOL }, () => {
  const checkRules = promtool(['check', 'rules', ALERTS])
  assert.equal(checkRules.status, 0, checkRules.output)
  // The example loads the rules (relative to itself) and scrapes the job the rules select.
  const checkConfig = promtool(['check', 'config', SCRAPE_CONFIG])
  assert.equal(checkConfig.status, 0, checkConfig.output)
  assert.match(checkConfig.output, /1 rule files found/)
  const config = parseYaml(readFileSync(SCRAPE_CONFIG, 'utf8')) as { rule_files: string[], scrape_configs: Array<{ job_name: string }> }
  assert.deepEqual(config.rule_files, ['alerts.yml'])
  assert.deepEqual(config.scrape_configs.map((c) => c.job_name), ['flash-sale'])
  for (const rule of rules()) {
    assert.ok(rule.alert !== undefined, `not an alert rule: ${rule.expr}`)
    assert.ok(['critical', 'warning'].includes(rule.labels?.severity ?? ''), `${rule.alert}: severity critical or warning`)
    assert.ok(rule.annotations?.summary !== undefined && rule.annotations.description !== undefined, `${rule.alert}: summary and description`)
  }
})

test('every dashboard query is valid PromQL (checked by promtool as recording rules)', { skip: !hasPromtool && NO_PROMTOOL }, (t) => {
  const queries = dashboardQueries()
  assert.ok(queries.length >= 20, `only ${queries.length} dashboard queries found`)
  const dir = mkdtempSync(join(tmpdir(), 'dashboard-rules-'))
  t.after(() => rmSync(dir, { recursive: true, force: true }))
  const file = join(dir, 'dashboard.rules.yml')
  // YAML accepts JSON: one recording rule per query.
  writeFileSync(file, JSON.stringify({ groups: [{ name: 'dashboard', rules: queries.map((q, i) => ({ record: `dashboard:query_${i}`, expr: q.expr })) }] }))
  const check = promtool(['check', 'rules', file])
  assert.equal(check.status, 0, `${check.output}\n${queries.map((q, i) => `query_${i} (${q.where}): ${q.expr}`).join('\n')}`)
})

test('a real /metrics scrape is promtool-clean and has every metric the alert rules and the dashboard query', async (t) => {
  const text = await scrapeAfterTraffic(t)

  if (hasPromtool) {
    const lint = promtool(['check', 'metrics'], text)
    assert.equal(lint.status, 0, lint.output)
    assert.equal(lint.output, '', 'promtool check metrics prints nothing')
  } else {
    t.diagnostic(`promtool check metrics skipped: ${NO_PROMTOOL}`)
  }

  const available = scrapedNames(text)
  const queried = [
    ...rules().map((r) => ({ where: `alert ${r.alert}`, expr: r.expr })),
    ...dashboardQueries()
  ]
  const missing: string[] = []
  const used = new Set<string>()
  for (const { where, expr } of queried) {
    const names = promqlMetricNames(expr)
    assert.ok(names.length > 0, `${where} names no metric: ${expr}`)
    for (const name of names) {
      used.add(name)
      if (!available.has(name) && !SYNTHETIC.has(name)) missing.push(`${where}: ${name}`)
    }
  }
  assert.deepEqual(missing, [], 'metrics queried but not in a real /metrics scrape')
  // What the issue asks the kit to cover is really queried.
  for (const name of ['up', 'flash_sale_checkout_attempts_total', 'flash_sale_purchases_total', 'flash_sale_sale_items',
    'flash_sale_http_request_duration_seconds_bucket', 'flash_sale_unavailable_responses_total', 'flash_sale_spool_bytes',
    'flash_sale_batch_queue_depth', 'flash_sale_batch_rows_total', 'flash_sale_next_sale_prepared', 'flash_sale_dependency_errors_total',
    'nodejs_eventloop_lag_p99_seconds']) {
    assert.ok(used.has(name), `${name} is not queried`)
  }
})
