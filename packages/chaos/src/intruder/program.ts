/**
 * The program the intruder runs (`node --input-type=module -e INTRUDER_PROGRAM`, as the
 * unprivileged user; see user.ts). It reads one task as JSON on stdin and prints what it saw
 * as JSON on stdout. It knows no key of the run and judges nothing: the caller, as root,
 * looks for keys in what it brings back and decides what is a refusal. Kept as a string so
 * the built package needs no file beside its bundle.
 */

/** The intruder's program (ES module source; its tasks are typed by `IntruderTasks`). */
export const INTRUDER_PROGRAM = String.raw`/* global process, Buffer, setTimeout, clearTimeout */
import { execFileSync } from 'node:child_process';
import { closeSync, lstatSync, openSync, readFileSync, readSync, readdirSync } from 'node:fs';
import { createServer, request } from 'node:http';
import { connect } from 'node:net';
import { join } from 'node:path';

/** One HTTP request; the status, the headers and the start of the body, or the error's code. */
function send({ host, port, method, path, headers, body, timeoutMs, maxBodyBytes = 2048 }) {
  return new Promise((resolve) => {
    let done = false;
    const req = request({ host, port, method, path, headers, agent: false });
    const finish = (outcome) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      req.destroy();
      resolve(outcome);
    };
    const timer = setTimeout(() => finish({ error: 'TIMEOUT' }), timeoutMs);
    req.on('response', (res) => {
      let text = '';
      res.setEncoding('latin1');
      res.on('data', (chunk) => {
        text += chunk;
        if (text.length >= maxBodyBytes) {
          finish({ status: res.statusCode, headers: res.headers, body: text.slice(0, maxBodyBytes) });
        }
      });
      res.on('end', () => finish({ status: res.statusCode, headers: res.headers, body: text }));
      res.on('error', () => finish({ status: res.statusCode, headers: res.headers, body: text }));
    });
    req.on('error', (error) => finish({ error: error.code ?? error.message }));
    req.end(body);
  });
}

/** 'requests', at most 'concurrency' at once; outcomes in the same order. */
async function requests({ requests: list, concurrency }) {
  const outcomes = new Array(list.length);
  let next = 0;
  const lane = async () => {
    while (next < list.length) {
      const index = next++;
      outcomes[index] = await send(list[index]);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, concurrency) }, lane));
  return outcomes;
}

/** Connect to each Unix socket ('\0name' for an abstract one): 'connected' or the error's code. */
async function connectUnix({ paths, timeoutMs }) {
  const attempt = (path) =>
    new Promise((resolve) => {
      const socket = connect({ path });
      const timer = setTimeout(() => {
        socket.destroy();
        resolve('TIMEOUT');
      }, timeoutMs);
      socket.on('connect', () => {
        clearTimeout(timer);
        socket.destroy();
        resolve('connected');
      });
      socket.on('error', (error) => {
        clearTimeout(timer);
        resolve(error.code ?? error.message);
      });
    });
  const outcomes = [];
  for (const path of paths) outcomes.push({ path, outcome: await attempt(path) });
  return outcomes;
}

/** 'ps' as any user runs it, and every /proc/<pid>/cmdline and environ this user may read. */
function processes() {
  const ps = execFileSync('ps', ['-ww', '-eo', 'pid,args'], { encoding: 'latin1' });
  const cmdlines = {};
  const environs = {};
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    for (const [file, into] of [
      ['cmdline', cmdlines],
      ['environ', environs],
    ]) {
      try {
        into[entry] = readFileSync('/proc/' + entry + '/' + file, 'latin1');
      } catch {
        // Not ours to read (environ of another user), or the process is gone.
      }
    }
  }
  return { ps, cmdlines, environs };
}

/** The first 'maxBytes' of a file, or undefined when this user may not read it. */
function readStart(path, maxBytes) {
  let fd;
  try {
    fd = openSync(path, 'r');
  } catch {
    return undefined;
  }
  try {
    const buffer = Buffer.alloc(maxBytes);
    const n = readSync(fd, buffer, 0, maxBytes, 0);
    return buffer.subarray(0, n);
  } catch {
    return undefined;
  } finally {
    closeSync(fd);
  }
}

/**
 * Walk each root as this user sees it (directories it may list, files it may read; links
 * are not followed): every regular file it can read, with its mode and the start of its
 * content. At the top of a root, the names in 'skip' are left out; below it, directories
 * named in 'prune'; with 'since', files last modified before it.
 */
function files({ roots, prune, maxBytes }) {
  const found = [];
  for (const root of roots) {
    const skip = new Set(root.skip ?? []);
    const stack = [{ dir: root.dir, top: true }];
    while (stack.length > 0) {
      const { dir, top } = stack.pop();
      let names;
      try {
        names = readdirSync(dir);
      } catch {
        continue;
      }
      for (const name of names) {
        if ((top && skip.has(name)) || prune.includes(name)) continue;
        const path = join(dir, name);
        let stat;
        try {
          stat = lstatSync(path);
        } catch {
          continue;
        }
        if (stat.isDirectory()) {
          stack.push({ dir: path, top: false });
          continue;
        }
        if (!stat.isFile() || (root.since !== undefined && stat.mtimeMs < root.since)) continue;
        const content = readStart(path, maxBytes);
        if (content === undefined) continue;
        found.push({ path, mode: stat.mode & 0o7777, content: content.toString('base64') });
      }
    }
  }
  return { files: found };
}

/**
 * Squat a port: bind host:port as soon as it is free (trying every 20 ms for up to
 * bindWithinMs), hold it for holdMs (or until 500 ms after endAfterRequests requests), answer
 * every request with status and an OpenAI-shaped error, and bring back what was sent (method,
 * path, headers, the first maxBodyBytes).
 */
function squat({ host, port, bindWithinMs, holdMs, status, maxBodyBytes, endAfterRequests }) {
  return new Promise((resolve) => {
    const recorded = [];
    let release;
    const server = createServer((req, res) => {
      const chunks = [];
      let size = 0;
      req.on('data', (chunk) => {
        if (size < maxBodyBytes) chunks.push(chunk.subarray(0, maxBodyBytes - size));
        size += chunk.length;
      });
      req.on('end', () => {
        recorded.push({
          at: Date.now(),
          method: req.method,
          path: req.url,
          headers: req.headers,
          body: Buffer.concat(chunks).toString('utf8'),
        });
        const answer = JSON.stringify({
          error: { message: 'fenced', type: 'conflict', param: null, code: 'fenced' },
        });
        res.writeHead(status, { 'content-type': 'application/json', connection: 'close' });
        res.end(answer);
        if (endAfterRequests !== undefined && recorded.length >= endAfterRequests) {
          setTimeout(() => release?.(), 500);
        }
      });
      req.on('error', () => undefined);
    });
    const deadline = Date.now() + bindWithinMs;
    const attempt = () => server.listen({ host, port, exclusive: true });
    server.on('error', (error) => {
      if (error.code === 'EADDRINUSE' && Date.now() < deadline) {
        setTimeout(attempt, 20);
        return;
      }
      resolve({ bound: false, error: error.code ?? error.message, requests: recorded });
    });
    server.on('listening', () => {
      const boundAt = Date.now();
      let released = false;
      release = () => {
        if (released) return;
        released = true;
        // The hold's timer would keep this process (and the caller waiting on it) alive.
        clearTimeout(hold);
        server.closeAllConnections();
        server.close(() =>
          resolve({ bound: true, boundAt, releasedAt: Date.now(), requests: recorded }),
        );
      };
      const hold = setTimeout(release, holdMs);
    });
    attempt();
  });
}

const TASKS = { requests, connectUnix, processes, files, squat };

let text = '';
process.stdin.setEncoding('utf8');
for await (const chunk of process.stdin) text += chunk;
const { task, input } = JSON.parse(text);
const result = await TASKS[task](input);
process.stdout.write(JSON.stringify(result));
`;
