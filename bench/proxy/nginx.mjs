/* global process, fetch, URL */
// nginx from the distribution's packages, as the native reference a user would otherwise put
// in front of vLLM: one worker process, a keep-alive upstream (`keepalive`, HTTP/1.1,
// `Connection ""`), `proxy_buffering off` so each chunk leaves when it arrives, no access log,
// listening on 127.0.0.1. The configuration is rendered into a temporary directory. Nothing is
// installed here: without nginx (`apt-get install nginx-light` on Debian) its rows are skipped.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { procStats, sleep, spawnOwned } from './processes.mjs';

export const NGINX = process.env.BENCH_PROXY_NGINX ?? '/usr/sbin/nginx';
/** `nginx/1.22.1`, from `nginx -v`. */
export function nginxVersion() {
  const out = spawnSync(NGINX, ['-v'], { encoding: 'utf8' });
  return /nginx\/[\w.]+/.exec(`${out.stderr}${out.stdout}`)?.[0] ?? 'nginx';
}

export const NGINX_MISSING = `nginx not found at ${NGINX} (install it with apt-get install nginx-light, or point BENCH_PROXY_NGINX at one): the nginx rows are skipped`;

const cpuOf = (s) => s.cpu.user + s.cpu.system;

/** A port free now on 127.0.0.1 (nginx cannot report the port it got from `listen 0`). */
function freePort() {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
}

/** The pids whose parent is `pid` (nginx's master forks its worker). */
function childrenOf(pid) {
  const out = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === pid) out.push(Number(name));
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

export function renderNginxConfig({ dir, port, upstream, fdLimit }) {
  const { hostname, port: upstreamPort } = new URL(upstream);
  return `# Rendered by bench/proxy/nginx.mjs for one run.
worker_processes 1;
worker_rlimit_nofile ${fdLimit};
daemon off;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events {
  worker_connections ${Math.max(1024, fdLimit - 64)};
}
http {
  access_log off;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  keepalive_timeout 120s;
  keepalive_requests 1000000;
  client_max_body_size 128m;
  upstream engine {
    server ${hostname === 'localhost' ? '127.0.0.1' : hostname}:${upstreamPort};
    keepalive 1024;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
  }
  server {
    listen 127.0.0.1:${port};
    # The benchmark's readiness probe, answered by nginx itself.
    location = /.bench-ready {
      return 204;
    }
    location / {
      proxy_pass http://engine;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_request_buffering off;
      proxy_read_timeout 300s;
    }
  }
}
`;
}

/**
 * nginx (master and one worker) in front of `upstream`; undefined when it is not installed.
 * `stats()` gives the worker's CPU and RSS, and in `parts` the worker's and the master's CPU.
 */
export async function startNginx(upstream, fdLimit) {
  if (!existsSync(NGINX)) return undefined;
  const dir = mkdtempSync(join(tmpdir(), 'es-bench-nginx-'));
  const port = await freePort();
  const conf = join(dir, 'nginx.conf');
  writeFileSync(conf, renderNginxConfig({ dir, port, upstream, fdLimit }));
  // SIGTERM is nginx's fast shutdown.
  const owned = spawnOwned(NGINX, ['-p', dir, '-c', conf, '-e', join(dir, 'error.log')], {
    stdio: ['ignore', 'ignore', 'pipe'],
    dir,
    graceMs: 10_000,
  });
  const { child, stop } = owned;
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const url = `http://127.0.0.1:${port}`;
  let worker;
  for (let i = 0; i < 100 && worker === undefined; i++) {
    if (owned.exited) {
      await stop();
      throw new Error(`nginx exited: ${stderr.slice(-1000)}`);
    }
    const [pid] = childrenOf(child.pid);
    if (pid !== undefined) {
      try {
        await fetch(`${url}/.bench-ready`);
        worker = pid;
      } catch {
        // not listening yet
      }
    }
    if (worker === undefined) await sleep(100);
  }
  if (worker === undefined) {
    await stop();
    throw new Error(`nginx did not listen on ${url}: ${stderr.slice(-1000)}`);
  }
  return {
    url,
    stats: async () => {
      const w = procStats(worker);
      return { ...w, parts: { 'worker 1': cpuOf(w), master: cpuOf(procStats(child.pid)) } };
    },
    config: readFileSync(conf, 'utf8').replaceAll(dir, '<tmp>'),
    version: nginxVersion(),
    stop,
  };
}
