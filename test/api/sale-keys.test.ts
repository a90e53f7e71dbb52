import assert from 'node:assert/strict'
import { test } from 'node:test'
import { Redis } from 'ioredis'
import { saleKeys, saleTag } from '../../src/sale/sale.js'
import { buildTestApp, checkout, isolatedConfig, sql, TestClock } from '../support/helpers.js'

test('no key of a live sale is ever missing: all seven exist from its publication, and after its last hold went', async (t) => {
  const clock = new TestClock(Date.parse('2031-03-04T13:10:00.000Z'))
  const config = isolatedConfig(t)
  const app = await buildTestApp(t, config, clock)
  const redis = new Redis(config.REDIS_URL, { keyPrefix: config.REDIS_KEY_PREFIX })
  t.after(() => redis.disconnect())
  const sale = (await app.inject('/')).json().sale
  const [row] = await sql<{ token: string }>(app, 'SELECT token FROM sales WHERE id = $1', [sale.id])
  const tag = saleTag(sale.id, row?.token as string)
  // The six decision keys and the abuse-limit counts: a Cluster slot migration refuses (TRYAGAIN)
  // a script that names a key missing on both sides, for as long as the slot migrates.
  const keys = [...saleKeys(tag), `${tag}:rate`]
  assert.equal(await redis.exists(...keys), 7, 'published with every key')

  assert.equal((await checkout(app, 'user_id=a&id=5')).statusCode, 200)
  clock.advance(60_000)
  await app.sales.releaseExpired() // the periodic sweep: the only hold goes, items and expiry lose their only entry
  assert.equal(await redis.hlen(keys[1] as string), 1, 'only the placeholder is left in items')
  assert.equal(await redis.zcard(keys[5] as string), 1, 'only the placeholder is left in expiry')
  assert.equal(await redis.exists(...keys), 7, 'every key is still there')
  const after = (await app.inject('/')).json().sale
  assert.deepEqual([after.sold, after.held, after.left], [0, 0, 20], 'a placeholder is never counted')
})
