/**
 * `npm run sale:status [-- --json]`: the current sale as Postgres, the system of record, holds
 * it (sold, live holds, buyers, revenue, checkout attempts by outcome). Reads only.
 */
import { SaleRepository, type SaleReport } from '../sale-repository.js'
import { withDatabase } from './database.js'

const count = (n: number) => n.toLocaleString('en-US')
const utc = (ms: number) => new Date(ms).toISOString().replace('T', ' ').slice(0, 16) + ' UTC'

function describe (report: SaleReport, now: number): string {
  const open = now < report.endsAt
  const left = report.items - report.sold - report.held
  const minutes = Math.ceil((report.endsAt - now) / 60_000)
  return [
    `sale ${report.id}: ${utc(report.startsAt)} to ${utc(report.endsAt)} (${open ? `open, ${minutes} min left` : 'closed'})`,
    `items ${count(report.items)}   sold ${count(report.sold)}   held ${count(report.held)}   left ${count(left)}`,
    `buyers ${count(report.buyers)} (limit ${report.userLimit} each)   revenue ${(report.revenueCents / 100).toFixed(2)}`,
    `checkout attempts ${count(Object.values(report.attempts).reduce((a, b) => a + b, 0))}: ` +
      (Object.entries(report.attempts).map(([outcome, n]) => `${outcome} ${count(n)}`).join(', ') || 'none')
  ].join('\n')
}

await withDatabase(async (pool) => {
  const now = Date.now()
  const report = await new SaleRepository(pool).report(now).catch((error: { code?: string }) => {
    // 42P01 undefined_table: this schema was never migrated.
    if (error.code === '42P01') throw new Error('no flash-sale tables in this database schema yet: run `npm run migrate` or start the service')
    throw error
  })
  if (process.argv.includes('--json')) console.log(JSON.stringify(report))
  else console.log(report === null ? 'no sale has opened yet' : describe(report, now))
})
