import neostandard from 'neostandard'

export default neostandard({ ts: true, ignores: ['dist/**', 'node_modules/**', 'sdk/schema.d.ts', 'sdk/dist/**'] })
