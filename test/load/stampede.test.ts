import { test } from 'node:test'
import { ITEMS, stampede, stampedeConfig, USERS } from '../support/stampede.js'

test(`${USERS} users stampede a ${ITEMS}-item sale over real HTTP: it sells out exactly, never oversells`, async (t) => {
  await stampede(t, stampedeConfig(t))
})
