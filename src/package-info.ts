import { existsSync, readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

/** The directory of the nearest package.json above this file (the project, from src/ under tsx and from dist/). */
function findProjectDir (): string | null {
  let dir = dirname(fileURLToPath(import.meta.url))
  while (!existsSync(join(dir, 'package.json'))) {
    const parent = dirname(dir)
    if (parent === dir) return null
    dir = parent
  }
  return dir
}

const foundProjectDir = findProjectDir()
/** The project's root directory (the working directory when no package.json is found). */
export const projectDir = foundProjectDir ?? process.cwd()

/** name, version and description from the nearest package.json. */
function readPackageInfo (dir: string | null): { name: string, version: string, description: string } {
  if (dir === null) return { name: 'flash-sale', version: '0.0.0', description: '' }
  const { name, version, description = '' } = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { name: string, version: string, description?: string }
  return { name, version, description }
}

export const packageInfo = readPackageInfo(foundProjectDir)
