import assert from 'node:assert/strict'
import { test } from 'node:test'
import { loadConfig } from '../src/config.js'

test('defaults point at the local services', () => {
  const config = loadConfig({}, {})
  assert.equal(config.DATABASE_URL, 'postgres://postgres@127.0.0.1:5432/postgres')
  assert.equal(config.REDIS_URL, 'redis://127.0.0.1:6379')
  assert.equal(config.SALE_ITEMS, 10_000)
  assert.equal(config.USER_LIMIT, 10)
  assert.equal(config.CHECKOUT_TTL_SECONDS, 600)
})

test('environment strings are coerced and validated', () => {
  assert.equal(loadConfig({}, { PORT: '8080', SALE_ITEMS: '200' }).SALE_ITEMS, 200)
})

test('a bad variable is named in the error', () => {
  for (const [name, value] of [['PORT', 'eighty'], ['DATABASE_URL', 'mysql://x'], ['USER_LIMIT', '0'], ['LOG_LEVEL', 'loud'], ['REDIS_URL', 'localhost']]) {
    assert.throws(() => loadConfig({}, { [name as string]: value }), new RegExp(`env/${name}`), name)
  }
})
