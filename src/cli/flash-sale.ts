#!/usr/bin/env node
/**
 * The operator's command (`npx flash-sale ...` after `npm run build`, the package's `bin`;
 * `npm run sale:status` runs the same from source):
 *
 *   flash-sale status [--json] [--sales N]   the latest N sales (default 5) from Postgres
 *
 * It reads the service's environment variables. Only the report goes to stdout; errors go to
 * stderr with exit code 1 (2 for a bad command line).
 */
import { parseArgs } from 'node:util'
import { SaleRepository } from '../sale/repository.js'
import { withDatabase } from './database.js'
import { statusDocument, statusText } from './status.js'

const USAGE = 'usage: flash-sale status [--json] [--sales N]    (N: 1-100, default 5)'

function usageError (message: string): never {
  console.error(`${message}\n${USAGE}`)
  process.exit(2)
}

function parse (argv: string[]): { json: boolean, sales: number } {
  let parsed
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: { json: { type: 'boolean', default: false }, sales: { type: 'string', default: '5' }, help: { type: 'boolean', short: 'h' } }
    })
  } catch (error) {
    // Node's own wording ("... place it at the end of the command after '--' ...") is about its parser, not this command.
    const unknown = /^Unknown option '([^']+)'/.exec((error as Error).message)?.[1]
    return usageError(unknown !== undefined ? `unknown option: ${unknown}` : (error as Error).message)
  }
  const { positionals, values } = parsed
  if (values.help === true) {
    console.log(USAGE)
    process.exit(0)
  }
  if (positionals.length !== 1 || positionals[0] !== 'status') usageError(`unknown command: ${positionals.join(' ') || '(none)'}`)
  const sales = /^[1-9][0-9]{0,2}$/.test(values.sales) ? Number(values.sales) : NaN
  if (!(sales <= 100)) usageError(`--sales must be a whole number from 1 to 100, not ${JSON.stringify(values.sales)}`)
  return { json: values.json, sales }
}

const options = parse(process.argv.slice(2))
await withDatabase(async (pool) => {
  const now = Date.now()
  const sales = await new SaleRepository(pool).report(now, options.sales).catch((error: { code?: string }) => {
    // 42P01 undefined_table: this schema was never migrated.
    if (error.code === '42P01') throw new Error('no flash-sale tables in this database schema yet: run `npm run migrate` or start the service')
    throw error
  })
  console.log(options.json ? JSON.stringify(statusDocument(sales, now)) : statusText(sales, now))
})
