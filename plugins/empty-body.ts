import fp from 'fastify-plugin'

/**
 * JSON is the only body the API takes (text/plain's parser is removed: anything else is a 415,
 * not a string to guess at), and an empty body is no body whatever its Content-Type says:
 * Swagger UI sends `Content-Type: application/json` with a cleared body, which is `?code=`
 * alone, not bad JSON.
 */
export default fp(async (fastify) => {
  fastify.removeContentTypeParser('text/plain')
  fastify.addHook('onRequest', (request, _reply, done) => {
    const { headers } = request
    // (HTTP/1.1: without Transfer-Encoding, a missing Content-Length also means no body.)
    const length = headers['content-length']
    if ((length === '0' || length === undefined) && headers['transfer-encoding'] === undefined) delete headers['content-type']
    done()
  })
}, { name: 'empty-body' })
