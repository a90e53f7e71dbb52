/**
 * A typed client of the flash-sale API: openapi-fetch over the types openapi-typescript
 * generates from openapi.json (`npm run openapi && npm run sdk` regenerates both).
 *
 *   const api = createFlashSaleClient('http://localhost:3000')
 *   const { data, error } = await api.POST('/checkout', { params: { query: { user_id: 'alice', id: '42' } } })
 *   if (error) console.log(error.error) // 'item_reserved' | 'item_sold' | 'sold_out' | ... (a union type)
 */
import createClient, { type Client, type ClientOptions } from 'openapi-fetch'
import type { paths } from './schema.js'

export type { components, operations, paths } from './schema.js'

export type FlashSaleClient = Client<paths>

/** A client of the service at `baseUrl` (e.g. `http://localhost:3000`); `options` go to openapi-fetch. */
export function createFlashSaleClient (baseUrl: string, options: Omit<ClientOptions, 'baseUrl'> = {}): FlashSaleClient {
  return createClient<paths>({ ...options, baseUrl })
}

type Responses<P extends keyof paths, M extends keyof paths[P]> = paths[P][M] extends { responses: infer R } ? R : never
type Json<R> = R extends { content: { 'application/json': infer T } } ? T : never
type Success<R> = { [S in keyof R]: `${S & number}` extends `2${string}` ? Json<R[S]> : never }[keyof R]
type Failure<R> = { [S in keyof R]: `${S & number}` extends `2${string}` ? never : Json<R[S]> }[keyof R]

export type CheckoutResponse = Success<Responses<'/checkout', 'post'>>
/** Every error body of POST /checkout; `error` is the union of its stable codes. */
export type CheckoutError = Failure<Responses<'/checkout', 'post'>>
export type CheckoutErrorCode = CheckoutError['error']

export type PurchaseResponse = Success<Responses<'/purchase', 'post'>>
/** Every error body of POST /purchase; `error` is the union of its stable codes. */
export type PurchaseError = Failure<Responses<'/purchase', 'post'>>
export type PurchaseErrorCode = PurchaseError['error']

export type ServiceDescription = Success<Responses<'/', 'get'>>
export type HealthResponse = Success<Responses<'/health', 'get'>>
