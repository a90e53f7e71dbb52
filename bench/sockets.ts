/** Which TCP connections a process holds, from /proc: how the bench and the tests find the Postgres backends serving one service process. */
import { readFileSync, readdirSync, readlinkSync } from 'node:fs'

/** Local ports of `pid`'s TCP connections to `remotePort` (its sockets in /proc/<pid>/fd, then /proc/net/tcp{,6}). */
export function localPortsTo (pid: number, remotePort: number): number[] {
  const inodes = new Set<string>()
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const inode = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`))?.[1]
      if (inode) inodes.add(inode)
    } catch { /* fds come and go */ }
  }
  const ports: number[] = []
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    for (const line of readFileSync(table, 'utf8').split('\n').slice(1)) {
      const [, local, remote, , , , , , , inode] = line.trim().split(/\s+/)
      if (local && remote && inode && inodes.has(inode) && parseInt(remote.split(':')[1] as string, 16) === remotePort) {
        ports.push(parseInt(local.split(':')[1] as string, 16))
      }
    }
  }
  return ports
}
