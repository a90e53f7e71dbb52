import assert from 'node:assert/strict'
import { test } from 'node:test'
import { Redis } from 'ioredis'
import { Inventory } from '../../src/sale/inventory.js'
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

test('a checkout that finds its sale lost leaves no abuse count that outlives the sale', async (t) => {
  const clock = new TestClock(Date.parse('2031-03-04T13:10:00.000Z'))
  const config = isolatedConfig(t)
  const app = await buildTestApp(t, config, clock)
  const redis = new Redis(config.REDIS_URL, { keyPrefix: config.REDIS_KEY_PREFIX })
  t.after(() => redis.disconnect())
  const now = app.sales.now()
  const sale = await app.sales.currentSale(now)
  // The server lost the sale (a flush): the decision's count is the first write of the rate hash.
  await redis.del(...sale.keys, `${sale.tag}:rate`)
  const inventory = new Inventory(app.redis)
  assert.equal(await inventory.reserveItem(sale, 'alice', 1, 'A'.repeat(22), now, now + 60_000, { max: 5, windowMs: 1000 }), 'no_sale')
  assert.equal(await redis.exists(`${sale.tag}:rate`), 1, 'the try was counted')
  assert.ok(await redis.pttl(`${sale.tag}:rate`) > 0, 'and the counts expire')
})
