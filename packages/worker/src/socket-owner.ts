/**
 * Whose socket answers? Before an engine is reported ready, the worker checks that the
 * listening socket at the engine's endpoint belongs to a process of the engine's own
 * process group: on a shared node another user can bind a port (or, were the directory
 * not private, a socket path) before the engine does and answer its health probe.
 *
 * Linux only (`/proc/net/{unix,tcp,tcp6}` and `/proc/<pid>/fd`); elsewhere the answer is
 * `unknown`.
 */
import { readFile, readdir, readlink } from 'node:fs/promises';
import type { EngineEndpoint } from './engine-front.js';

/** `owned`: a process of the group holds it; `foreign`: none does (or nothing listens). */
export type SocketOwnership = 'owned' | 'foreign' | 'unknown';

const SO_ACCEPTCON = 0x10000;
const TCP_LISTEN = '0A';

/** Inodes of the listening Unix sockets bound to `path` (from `/proc/net/unix` text). */
export function listeningUnixInodes(table: string, path: string): Set<string> {
  const inodes = new Set<string>();
  for (const line of table.split('\n').slice(1)) {
    // Num RefCount Protocol Flags Type St Inode Path (a path may contain spaces).
    const fields = line.trim().split(/\s+/);
    if (fields.length < 8) continue;
    const flags = Number.parseInt(fields[3] ?? '', 16);
    if ((flags & SO_ACCEPTCON) === 0) continue;
    if (fields.slice(7).join(' ') === path) inodes.add(fields[6] ?? '');
  }
  return inodes;
}

/** Inodes of the TCP sockets listening on `port` (from `/proc/net/tcp` or `tcp6` text). */
export function listeningTcpInodes(table: string, port: number): Set<string> {
  const inodes = new Set<string>();
  for (const line of table.split('\n').slice(1)) {
    // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
    const fields = line.trim().split(/\s+/);
    if (fields.length < 10 || fields[3] !== TCP_LISTEN) continue;
    const local = fields[1] ?? '';
    if (Number.parseInt(local.slice(local.lastIndexOf(':') + 1), 16) === port) {
      inodes.add(fields[9] ?? '');
    }
  }
  return inodes;
}

/** The process group of `/proc/<pid>/stat` text (the field after the state and ppid). */
export function processGroupOf(stat: string): number | undefined {
  // pid (comm) state ppid pgrp ...: comm may hold spaces and parentheses.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const pgrp = Number(fields[2]);
  return Number.isInteger(pgrp) ? pgrp : undefined;
}

async function readText(file: string): Promise<string | undefined> {
  try {
    return await readFile(file, 'utf8');
  } catch {
    return undefined;
  }
}

async function listeningInodes(endpoint: EngineEndpoint): Promise<Set<string> | undefined> {
  if ('socketPath' in endpoint) {
    const table = await readText('/proc/net/unix');
    return table === undefined ? undefined : listeningUnixInodes(table, endpoint.socketPath);
  }
  const tables = await Promise.all([readText('/proc/net/tcp'), readText('/proc/net/tcp6')]);
  if (tables.every((table) => table === undefined)) return undefined;
  const inodes = new Set<string>();
  for (const table of tables) {
    for (const inode of listeningTcpInodes(table ?? '', endpoint.port)) inodes.add(inode);
  }
  return inodes;
}

/** Socket inodes held open by the processes of group `pgid`. */
async function groupSocketInodes(pgid: number): Promise<Set<string>> {
  const inodes = new Set<string>();
  let pids: string[];
  try {
    pids = (await readdir('/proc')).filter((name) => /^\d+$/.test(name));
  } catch {
    return inodes;
  }
  await Promise.all(
    pids.map(async (pid) => {
      const stat = await readText(`/proc/${pid}/stat`);
      if (stat === undefined || processGroupOf(stat) !== pgid) return;
      let fds: string[];
      try {
        fds = await readdir(`/proc/${pid}/fd`);
      } catch {
        return;
      }
      for (const fd of fds) {
        try {
          const match = /^socket:\[(\d+)\]$/.exec(await readlink(`/proc/${pid}/fd/${fd}`));
          if (match?.[1] !== undefined) inodes.add(match[1]);
        } catch {
          // The fd was closed meanwhile.
        }
      }
    }),
  );
  return inodes;
}

/**
 * Whether the socket listening at `endpoint` belongs to a process of group `pgid` (the
 * engine guard leads the group of the engine and its children).
 * @example
 * await socketOwnership({ host: '127.0.0.1', port: 30001 }, guard.pid); // 'owned'
 */
export async function socketOwnership(
  endpoint: EngineEndpoint,
  pgid: number,
): Promise<SocketOwnership> {
  const listening = await listeningInodes(endpoint);
  if (listening === undefined) return 'unknown';
  if (listening.size === 0) return 'foreign';
  const held = await groupSocketInodes(pgid);
  for (const inode of listening) if (held.has(inode)) return 'owned';
  return 'foreign';
}
