/** `npm run bench`'s flags (see bench/README.md) and the sizes of its scenarios. */
import { npmStartFlags } from './processes.js'

const flag = (name: string): string | undefined => process.argv.find((arg) => arg.startsWith(`--${name}=`))?.slice(name.length + 3)

export const smoke = process.argv.includes('--smoke')
export const clusterMode = process.argv.includes('--cluster')
/** The service built elsewhere (e.g. the code before a change, for back-to-back runs). */
export const dist = flag('dist') ?? 'dist'
/** `npm start`'s Node flags: the bench runs the service as it runs for real; `--node-flags` come after them and win (V8 takes a flag's last value). */
export const startFlags = npmStartFlags()
export const nodeFlags = flag('node-flags')?.split(',') ?? []

export const SCENARIOS = ['bare', 'floor', 'stampede', 'latency', 'sellout'] as const
export type Scenario = typeof SCENARIOS[number]
const only = flag('only')?.split(',')
const unknown = only?.filter((name) => !(SCENARIOS as readonly string[]).includes(name)) ?? []
if (unknown.length > 0) throw new Error(`--only: unknown scenario ${unknown.join(', ')} (known: ${SCENARIOS.join(', ')})`)
export const runs = (scenario: Scenario): boolean => only === undefined || only.includes(scenario)

/** Rounds of the floor and the stampede, alternating which goes first: the comparison takes medians. */
export const ROUNDS = Number(flag('rounds') ?? (smoke ? 1 : 2))
if (!Number.isInteger(ROUNDS) || ROUNDS < 1) throw new Error('--rounds: a whole number of rounds, 1 or more')
export const historyRows = Number(flag('history') ?? 0)
export const historyDays = Number(flag('history-days') ?? 30)
export const historyRounds = Number(flag('history-rounds') ?? 3)

export const DURATION_S = smoke ? 2 : 10
export const LATENCY_DURATION_S = smoke ? 1 : 5
export const CONNECTIONS = 200
/** Keep-alive connections of the fixed-rate scenario at most: its rate at a few ms each needs far fewer (Little's law). */
export const LATENCY_CONNECTIONS = 50
export const STAMPEDE_ITEMS = 10_000
/** The stampede's users: enough that neither the per-user rate limit nor the per-user item limit decides. */
export const STAMPEDE_USERS = 1_000_000
export const SELLOUT_ITEMS = smoke ? 500 : 10_000
export const SELLOUT_CONNECTIONS = smoke ? 100 : 1000
/** The sell-out stops at the sell-out; this only caps a run that never gets there. */
export const SELLOUT_MAX_S = 60
/** Offered rate of the latency scenario when the stampede did not run to measure the maximum. */
export const DEFAULT_FIXED_RATE = 1000
export const USER_LIMIT = 10
/** Checkout TTL of the sell-out's service: abandoned holds come back within the run. */
export const SELLOUT_TTL_S = 5
