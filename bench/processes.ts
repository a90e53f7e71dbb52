/**
 * The service as a bench process, shared by `bench/run.ts` and `bench/paired.ts`: the Node flags
 * it runs with for real, waiting for it to answer, stopping it, and its resident memory.
 */
import type { ChildProcess } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { setTimeout as sleep } from 'node:timers/promises'

/** The Node flags `npm start` gives the service (package.json), so a bench runs it as it runs for real. */
export const npmStartFlags = (): string[] =>
  (JSON.parse(readFileSync('package.json', 'utf8')) as { scripts: { start: string } }).scripts.start.split(' ').filter((word) => word.startsWith('--'))

/** Waits until `child` answers GET `url`/health; fails if it exits first or takes `attempts` × 100 ms. */
export async function untilHealthy (child: ChildProcess, url: string, name: string, attempts: number): Promise<void> {
  for (let i = 0; i < attempts; i++) {
    if (child.exitCode !== null) throw new Error(`${name} exited with ${child.exitCode}`)
    if (await fetch(`${url}/health`).then((res) => res.ok, () => false)) return
    await sleep(100)
  }
  throw new Error(`${name} did not start`)
}

export async function stop (child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return
  const exited = new Promise((resolve) => child.once('exit', resolve))
  child.kill('SIGTERM')
  await exited
}

/** Resident set of a process and its direct children (cluster workers), in MB: `VmHWM` peak or `VmRSS` now. */
export function rssMb (pid: number, field: 'VmHWM' | 'VmRSS' = 'VmHWM'): number {
  const kb = (p: number) => Number(new RegExp(`${field}:\\s+(\\d+)`).exec(readFileSync(`/proc/${p}/status`, 'utf8'))?.[1] ?? 0)
  let children: number[] = []
  try {
    children = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number)
  } catch { /* no children file */ }
  return Math.round([pid, ...children].reduce((sum, p) => sum + kb(p), 0) / 1024)
}
