// helpers/processes.js: starts and stops the real binaries the browser tests
// drive: mock-llm (the deterministic model) and agent-server (with its own
// embedded PostgreSQL in a fresh data dir). Both print the address they
// bound ("... listening on http://HOST:PORT"), which is how port 0 is read.
// Every server's `admin` token is ADMIN_TOKEN (AGENT_SERVER_ADMIN_TOKEN), so
// the tests can sign in and call the API without reading a file.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository root: tests/browser/helpers/../../.. */
export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

/** How long a binary may take to print its address: the first start of the
 * server runs initdb, which takes a few seconds on two cores. */
const START_TIMEOUT_MS = 90_000;
/** How long a SIGTERM'd server may take to stop its cluster and exit. */
const STOP_TIMEOUT_MS = 30_000;
/** Lines of output kept per process, attached to a failing test. */
const LOG_LINES = 400;
/** The `admin` token of every server the tests start: a fixed test value,
 * at least the 32 characters the server asks of AGENT_SERVER_ADMIN_TOKEN. */
export const ADMIN_TOKEN = 'browser-tests-admin-token-not-a-secret-0123456789';

function binary(name) {
  const file = path.join(REPO_ROOT, 'target', 'debug', name);
  if (!fs.existsSync(file)) {
    throw new Error(`${file} is missing; run \`cargo build --bins\` in the repository first`);
  }
  return file;
}

/** A child process whose output is kept (the last LOG_LINES lines). */
class Child {
  constructor(name, file, args, env) {
    this.name = name;
    this.lines = [];
    this.process = spawn(file, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    /** Set by `stop`: an exit without it is news, and is said at once. */
    this.stopping = false;
    this.exited = new Promise((resolve) => this.process.once('exit', (code, signal) => {
      if (!this.stopping) {
        const news = `${name} (pid ${this.process.pid}) exited without being asked to: ${signal ?? `code ${code}`}`;
        this.line(`--- ${news}`);
        console.error(`browser tests: ${news}`);
      }
      resolve({ code, signal });
    }));
    this.listeners = new Set();
    for (const stream of [this.process.stdout, this.process.stderr]) {
      let partial = '';
      stream.setEncoding('utf8');
      stream.on('data', (chunk) => {
        const parts = (partial + chunk).split('\n');
        partial = parts.pop();
        for (const line of parts) this.line(line);
      });
    }
  }

  line(line) {
    this.lines.push(line);
    if (this.lines.length > LOG_LINES) this.lines.shift();
    for (const listener of this.listeners) listener(line);
  }

  get running() {
    return this.process.exitCode === null && this.process.signalCode === null;
  }

  /** Resolves with the URL in the "<what> listening on http://..." line. */
  address(what) {
    const pattern = new RegExp(`${what} listening on (http://\\S+)`);
    const seen = this.lines.map((line) => pattern.exec(line)).find(Boolean);
    if (seen) return Promise.resolve(seen[1]);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => done(new Error(`${this.name} printed no address within ${START_TIMEOUT_MS} ms`)), START_TIMEOUT_MS);
      const listener = (line) => {
        const match = pattern.exec(line);
        if (match) done(null, match[1]);
      };
      const done = (error, url) => {
        clearTimeout(timer);
        this.listeners.delete(listener);
        if (error) reject(new Error(`${error.message}\n${this.log()}`));
        else resolve(url);
      };
      this.listeners.add(listener);
      this.exited.then(({ code, signal }) => done(new Error(`${this.name} exited (${code ?? signal}) before it listened`)));
    });
  }

  log() {
    return `--- last output of ${this.name} ---\n${this.lines.join('\n')}`;
  }

  /** Sends `signal` and waits up to `ms` for the exit; true if it exited. */
  async stop(signal, ms) {
    if (!this.running) return true;
    this.stopping = true;
    this.process.kill(signal);
    const outcome = await Promise.race([this.exited.then(() => true), sleep(ms).then(() => false)]);
    return outcome;
  }
}

export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** The deterministic model server. */
export class MockLlm {
  static async start() {
    const mock = new MockLlm();
    mock.child = new Child('mock-llm', binary('mock-llm'), ['--addr', '127.0.0.1:0'], { ...process.env, RUST_LOG: 'warn' });
    mock.url = await mock.child.address('mock-llm');
    return mock;
  }

  /** Replaces every fixture rule (infra/mock-llm/README.md). */
  async setFixtures(rules) {
    const response = await fetch(`${this.url}/_mock/fixtures`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(rules),
    });
    if (!response.ok) throw new Error(`mock-llm refused the fixtures: ${await response.text()}`);
  }

  /** Every model request received so far. */
  async requests() {
    const response = await fetch(`${this.url}/_mock/requests`);
    return (await response.json()).requests;
  }

  async clearRequests() {
    await fetch(`${this.url}/_mock/requests`, { method: 'DELETE' });
  }

  log() {
    return this.child.log();
  }

  async stop() {
    if (!(await this.child.stop('SIGTERM', 5000))) await this.child.stop('SIGKILL', 5000);
  }
}

/** The database the embedded cluster of every server holds (`startup.rs`). */
const EMBEDDED_DATABASE = 'agent_server';
/** The port that names the embedded cluster's socket file (`.s.PGSQL.5432`). */
const EMBEDDED_PORT = 5432;

/** One agent-server process at a time on one data dir; `kill9` and
 * `restart` replace the process, keeping the port and the data dir. */
export class AgentServer {
  /** `env` adds settings (contract section 2) to the defaults below.
   * `database`, another running AgentServer, makes this one a second
   * instance on that server's embedded cluster (contract section 10):
   * `DATABASE_URL` names the cluster's Unix socket, and the workspace is
   * that server's, since instances share it. */
  static async start({ mockUrl, env = {}, database = null }) {
    const server = new AgentServer();
    server.extraEnv = database
      ? { DATABASE_URL: database.databaseUrl(), AGENT_WORKSPACE: database.workspace, ...env }
      : env;
    server.dataDir = fs.mkdtempSync(path.join('/tmp', 'agent-server-browser-'));
    // The embedded cluster runs as `postgres` when the tests run as root: it
    // must be able to enter the data dir, which mkdtemp makes 0700.
    fs.chmodSync(server.dataDir, 0o755);
    server.mockUrl = mockUrl;
    server.logs = [];
    await server.spawn('127.0.0.1:0');
    return server;
  }

  async spawn(addr) {
    const env = {
      ...process.env,
      AGENT_SERVER_ADDR: addr,
      AGENT_SERVER_DATA_DIR: this.dataDir,
      LLM_PROVIDER: 'openai',
      LLM_BASE_URL: `${this.mockUrl}/v1`,
      OPENAI_API_KEY: 'test',
      LOG_FORMAT: 'json',
      RUST_LOG: process.env.RUST_LOG || 'info',
      AGENT_SERVER_ADMIN_TOKEN: ADMIN_TOKEN,
      ...this.extraEnv,
    };
    if (!('DATABASE_URL' in this.extraEnv)) delete env.DATABASE_URL;
    if (!('AGENT_WORKSPACE' in this.extraEnv)) delete env.AGENT_WORKSPACE;
    if (!('AGENT_SERVER_INSTANCE_ID' in this.extraEnv)) delete env.AGENT_SERVER_INSTANCE_ID;
    delete env.ANTHROPIC_API_KEY;
    // Settings of a developer's shell that would change what is tested.
    if (!('AGENT_SERVER_AUTH' in this.extraEnv)) delete env.AGENT_SERVER_AUTH;
    if (!('AGENT_REQUIRE_SECOND_APPROVER' in this.extraEnv)) delete env.AGENT_REQUIRE_SECOND_APPROVER;
    // Only a test that asks for trace links gets them.
    if (!('GRAFANA_URL' in this.extraEnv)) delete env.GRAFANA_URL;
    this.child = new Child('agent-server', binary('agent-server'), ['serve'], env);
    this.url = await this.child.address('agent-server');
    this.port = Number(new URL(this.url).port);
    this.instanceId = this.startedInstance();
  }

  /** The instance id (contract section 10) named by the start-up line,
   * which is logged before the address is printed. */
  startedInstance() {
    for (const line of this.child.lines) {
      let entry;
      try {
        entry = JSON.parse(line);
      } catch {
        continue;
      }
      if (entry && entry.message === 'agent-server starting' && typeof entry.instance === 'string') return entry.instance;
    }
    throw new Error(`agent-server logged no instance id at start\n${this.child.log()}`);
  }

  /** The workspace the tools act on. */
  get workspace() {
    return this.extraEnv.AGENT_WORKSPACE ?? path.join(this.dataDir, 'workspace');
  }

  /** A `DATABASE_URL` for this server's embedded cluster: its Unix socket
   * under the data dir, the superuser the cluster trusts, its database. */
  databaseUrl() {
    if (this.extraEnv.DATABASE_URL) return this.extraEnv.DATABASE_URL;
    const socketDir = path.join(this.dataDir, 'pg', 'socket');
    if (!fs.existsSync(path.join(socketDir, `.s.PGSQL.${EMBEDDED_PORT}`))) {
      throw new Error(`no PostgreSQL socket in ${socketDir}: is the server running on its embedded cluster?`);
    }
    return `host=${socketDir} port=${EMBEDDED_PORT} user=postgres dbname=${EMBEDDED_DATABASE}`;
  }

  /** Kills the server the hard way; its PostgreSQL keeps running. */
  async kill9() {
    this.logs.push(this.child.log());
    await this.child.stop('SIGKILL', 10_000);
  }

  /** Starts the server again on the same port and data dir. */
  async restart() {
    if (this.child.running) throw new Error('restart() needs the server stopped first');
    await this.spawn(`127.0.0.1:${this.port}`);
  }

  log() {
    return [...this.logs, this.child.log()].join('\n');
  }

  /** SIGTERM (the server stops its cluster), then cleans up whatever is
   * left: a postmaster outliving a killed server, and the data dir. */
  async stop() {
    if (!(await this.child.stop('SIGTERM', STOP_TIMEOUT_MS))) await this.child.stop('SIGKILL', 5000);
    await stopPostmaster(path.join(this.dataDir, 'pg', 'data'));
    fs.rmSync(this.dataDir, { recursive: true, force: true });
  }
}

/** Stops a PostgreSQL postmaster still running on `dataDir` (SIGQUIT is its
 * immediate shutdown), so no test leaves a cluster behind. */
async function stopPostmaster(dataDir) {
  let pid;
  try {
    pid = Number(fs.readFileSync(path.join(dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
  } catch {
    return;
  }
  if (!Number.isInteger(pid) || pid <= 0 || !alive(pid)) return;
  process.kill(pid, 'SIGQUIT');
  for (let i = 0; i < 100 && alive(pid); i++) await sleep(100);
}

function alive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
