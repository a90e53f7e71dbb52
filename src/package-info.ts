import { existsSync, readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

/** name and version from the nearest package.json (works from src/ under tsx and from dist/). */
function readPackageInfo (): { name: string, version: string } {
  let dir = dirname(fileURLToPath(import.meta.url))
  while (!existsSync(join(dir, 'package.json'))) {
    const parent = dirname(dir)
    if (parent === dir) return { name: 'flash-sale', version: '0.0.0' }
    dir = parent
  }
  const { name, version } = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { name: string, version: string }
  return { name, version }
}

export const packageInfo = readPackageInfo()
