import { existsSync, readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

/** name, version and description from the nearest package.json (works from src/ under tsx and from dist/). */
function readPackageInfo (): { name: string, version: string, description: string } {
  let dir = dirname(fileURLToPath(import.meta.url))
  while (!existsSync(join(dir, 'package.json'))) {
    const parent = dirname(dir)
    if (parent === dir) return { name: 'flash-sale', version: '0.0.0', description: '' }
    dir = parent
  }
  const { name, version, description = '' } = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { name: string, version: string, description?: string }
  return { name, version, description }
}

export const packageInfo = readPackageInfo()
