// The built-in web page (chat-server/static/index.html) in a real browser.
//
// Two chat-server processes share one Redis and one PostgreSQL, with auth on.
// Headless Debian Chromium, driven by Playwright, opens the page of each: alice
// on instance A, bob on instance B. They log in with tokens, chat in a room they
// share (so presence and messages cross instances), each in a room of their
// own, reload, and recover the history. Every check reads the DOM; waits are
// bounded only so that a broken page fails instead of hanging.
//
// scripts/browser-test.sh runs this with the environment it needs:
//   CHAT_SERVER_BIN          the chat-server binary
//   CHAT_TEST_REDIS_URL      Redis (scripts/services.sh)
//   CHAT_TEST_DATABASE_URL   PostgreSQL (scripts/services.sh)
//   CHROMIUM                 the browser (default /usr/bin/chromium)
//   CHAT_BROWSER_SCREENSHOT  where to save a screenshot of alice's page (optional)

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createHmac, randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

/** Upper bound for any one wait: a broken page fails rather than hangs. */
const WAIT_MS = 20_000;
const SECRET = randomBytes(16).toString("hex");
const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

function env(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is unset (scripts/browser-test.sh sets it)`);
  return value;
}

/** An HS256 JWT for `sub`, valid for an hour: what the server's auth verifies. */
function token(sub) {
  const b64 = (obj) => Buffer.from(JSON.stringify(obj)).toString("base64url");
  const body = `${b64({ alg: "HS256", typ: "JWT" })}.${b64({ sub, exp: Math.floor(Date.now() / 1000) + 3600 })}`;
  return `${body}.${createHmac("sha256", SECRET).update(body).digest("base64url")}`;
}

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/**
 * Polls `read` until `ok` holds for what it returned (by default: it is truthy);
 * fails with `what` and the last value read.
 */
async function eventually(what, read, ok = Boolean) {
  const deadline = Date.now() + WAIT_MS;
  let last;
  for (;;) {
    last = await read();
    if (ok(last)) return last;
    if (Date.now() > deadline) assert.fail(`${what}; last seen: ${JSON.stringify(last)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Starts one chat-server process (on `port`, else a free one) and waits until /readyz says ready. */
async function startServer(name, port) {
  port ??= await freePort();
  const child = spawn(env("CHAT_SERVER_BIN"), [], {
    env: {
      ...process.env,
      CHAT_LISTEN: `127.0.0.1:${port}`,
      REDIS_URL: env("CHAT_TEST_REDIS_URL"),
      DATABASE_URL: env("CHAT_TEST_DATABASE_URL"),
      CHAT_JWT_SECRET: SECRET,
      CHAT_INSTANCE_ID: name,
      RUST_LOG: "warn",
    },
    stdio: ["ignore", "inherit", "inherit"],
  });
  const url = `http://127.0.0.1:${port}`;
  await eventually(`${name} ready at ${url}`, async () => {
    if (child.exitCode !== null) throw new Error(`${name} exited with ${child.exitCode}`);
    try {
      return (await fetch(`${url}/readyz`)).status === 200;
    } catch {
      return false;
    }
  });
  return { name, port, child, url };
}

/** Stops a server with SIGTERM (it closes its sockets with 1001) and waits for it to exit. */
async function stopServer(server) {
  if (server.child.exitCode !== null) return;
  const exited = new Promise((resolve) => server.child.once("exit", resolve));
  server.child.kill("SIGTERM");
  await exited;
}

const rand = randomBytes(4).toString("hex");
const shared = `hall-${rand}`;
const alpha = `alpha-${rand}`;
const beta = `beta-${rand}`;
let servers = [];
let context;
let profile;

before(async () => {
  // One after the other: the first one runs the schema migrations.
  servers.push(await startServer("browser-a"));
  servers.push(await startServer("browser-b"));
  profile = mkdtempSync(join(tmpdir(), "chatback-chromium-"));
  context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: CHROMIUM_ARGS,
    viewport: { width: 1100, height: 640 },
  });
});

after(async () => {
  await context?.close();
  await Promise.all(servers.map(stopServer));
  if (profile) rmSync(profile, { recursive: true, force: true });
});

// DOM readers: what a person sees on the page.
const status = (page) => page.locator("#status").textContent();
const members = (page) => page.locator("#members .member").allTextContents();
const rooms = (page) => page.locator("#rooms .room").allTextContents();
const bodies = (page) => page.locator("#log .msg > div:last-child").allTextContents();
const notes = (page) => page.locator("#log .note").allTextContents();
const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);

async function openPage(server) {
  const page = await context.newPage();
  page.on("pageerror", (e) => console.error(`page error at ${server.url}: ${e.message}`));
  await page.goto(server.url);
  return page;
}

async function login(page, user, room) {
  await page.fill("#token", token(user));
  await page.fill("#firstRoom", room);
  await page.click("#login button");
  await eventually(`${user} is online`, () => status(page), (s) => s === `${user} · online`);
  await eventually(`${user} sees ${room} in the rooms`, () => rooms(page), (r) => r.includes(`# ${room}`));
}

async function say(page, text) {
  await page.fill("#text", text);
  await page.press("#text", "Enter");
}

async function joinRoom(page, room) {
  await page.fill("#joinRoom", room);
  await page.press("#joinRoom", "Enter");
  await eventually(`${room} joined and active`, () => page.locator("#rooms .room.active").allTextContents(), (r) => same(r, [`# ${room}`]));
}

/** Waits until the log of the page's active room shows exactly `want`, in order. */
async function logShows(page, who, want) {
  await eventually(`${who}'s log shows ${JSON.stringify(want)}`, () => bodies(page), (got) => same(got, want));
}

async function membersAre(page, who, want) {
  await eventually(`${who} sees members ${JSON.stringify(want)}`, () => members(page), (got) => same(got, want));
}

test("two pages on two instances chat, see presence, reload and recover history", async () => {
  const [a, b] = servers;
  const alice = await openPage(a);
  const bob = await openPage(b);

  // Log in on different instances, into a room they share.
  await login(alice, "alice", shared);
  await membersAre(alice, "alice", ["alice"]);
  await login(bob, "bob", shared);
  await membersAre(bob, "bob", ["alice", "bob"]);
  // bob is on the other instance: his join reaches alice through Redis.
  await membersAre(alice, "alice", ["alice", "bob"]);
  await eventually("alice is told bob joined", () => notes(alice), (n) => n.includes("bob joined"));

  // Chat across instances.
  await say(alice, "hello from A");
  await logShows(bob, "bob", ["hello from A"]);
  await say(bob, "hi from B");
  await logShows(alice, "alice", ["hello from A", "hi from B"]);
  assert.equal(await alice.locator("#log .msg.mine").count(), 1, "alice's own message is marked as hers");

  // Each in a room of their own.
  await joinRoom(alice, alpha);
  await membersAre(alice, "alice", ["alice"]);
  await say(alice, "alpha only");
  await logShows(alice, "alice", ["alpha only"]);
  await joinRoom(bob, beta);
  await say(bob, "beta only");
  await logShows(bob, "bob", ["beta only"]);
  assert.deepEqual(await rooms(alice), [`# ${shared}`, `# ${alpha}`]);
  assert.deepEqual(await rooms(bob), [`# ${shared}`, `# ${beta}`]);

  // A message in a room that is not on screen shows up as unread, then in the log.
  await bob.click(`#rooms .room >> text="# ${shared}"`);
  await say(bob, "while you were in alpha");
  await logShows(bob, "bob", ["hello from A", "hi from B", "while you were in alpha"]);
  await eventually("alice sees one unread in the shared room", () => rooms(alice), (r) => r.includes(`# ${shared}1`));
  await alice.click(`#rooms .room >> text="# ${shared}"`);
  await logShows(alice, "alice", ["hello from A", "hi from B", "while you were in alpha"]);
  assert.deepEqual(await rooms(alice), [`# ${shared}`, `# ${alpha}`], "the unread badge is cleared");

  // bob reloads: alice sees him leave; he logs in again and recovers both rooms.
  await bob.reload();
  await membersAre(alice, "alice", ["alice"]);
  await eventually("alice is told bob left", () => notes(alice), (n) => n.includes("bob left"));
  await login(bob, "bob", shared);
  await logShows(bob, "bob", ["hello from A", "hi from B", "while you were in alpha"]);
  await membersAre(bob, "bob", ["alice", "bob"]);
  await membersAre(alice, "alice", ["alice", "bob"]);
  await joinRoom(bob, beta);
  await logShows(bob, "bob", ["beta only"]);

  // Instance A restarts under alice: her page notices, reconnects by itself and
  // rejoins with `since`, so what bob said meanwhile (on B) appears in order.
  await bob.click(`#rooms .room >> text="# ${shared}"`);
  await stopServer(a);
  await eventually("alice's page shows it is offline", () => alice.locator("#status").getAttribute("class"), (c) => c === "status off");
  await say(bob, "while A was down");
  await logShows(bob, "bob", ["hello from A", "hi from B", "while you were in alpha", "while A was down"]);
  servers[0] = await startServer(a.name, a.port);
  await eventually("alice is back online", () => status(alice), (s) => s === "alice · online");
  await logShows(alice, "alice", ["hello from A", "hi from B", "while you were in alpha", "while A was down"]);
  await membersAre(alice, "alice", ["alice", "bob"]);

  // alice reloads onto the other instance (as a load balancer may send her) and
  // recovers from there what she saw on the first one.
  await alice.goto(b.url);
  await login(alice, "alice", alpha);
  await logShows(alice, "alice", ["alpha only"]);
  await joinRoom(alice, shared);
  await logShows(alice, "alice", ["hello from A", "hi from B", "while you were in alpha", "while A was down"]);
  await membersAre(alice, "alice", ["alice", "bob"]);
  await say(bob, "welcome back");
  await logShows(alice, "alice", ["hello from A", "hi from B", "while you were in alpha", "while A was down", "welcome back"]);

  if (process.env.CHAT_BROWSER_SCREENSHOT) {
    await alice.screenshot({ path: process.env.CHAT_BROWSER_SCREENSHOT });
  }
});
