// The floor for bench/run.sh: uWebSockets.js pub/sub speaking the subset of
// docs/protocol.md that chat-load uses (join by ?room=, join/send/ping frames;
// joined/message/ack/pong/error replies), with a seq per room and no
// persistence, presence or auth. Whatever chat-server costs above this is the
// price of its guarantees and of its own overhead.  Usage: node server.js PORT
const { platform, arch, versions } = process;
// The native addon only: the package silently falls back to a slow pure-JS
// server when it is missing, which would not be a floor.
const uws = require(`@trufflesuite/uws-js-unofficial/binaries/uws_${platform}_${arch}_${versions.modules}.node`);

const port = Number(process.argv[2] || 9001);
const seqs = new Map(); // room -> last seq
const text = new TextDecoder();
const reply = (ws, frame) => ws.send(JSON.stringify(frame), false);

function join(ws, room) {
  if (typeof room !== 'string' || !/^[A-Za-z0-9_.:-]{1,64}$/.test(room)) {
    return reply(ws, { type: 'error', code: 'invalid_room', message: `invalid room ${room}` });
  }
  ws.getUserData().rooms.add(room);
  ws.subscribe(room); // subscribed before `joined` is queued: nothing after last_seq is missed
  reply(ws, { type: 'joined', room, user: ws.getUserData().user, members: [], last_seq: seqs.get(room) || 0 });
}

const app = uws.App().ws('/ws', {
  idleTimeout: 0,
  sendPingsAutomatically: false,
  maxPayloadLength: 64 * 1024,
  maxBackpressure: 1 << 20, // a slower reader than this is skipped, and chat-load's audit shows it as missing
  upgrade: (res, req, context) => {
    const query = new URLSearchParams(req.getQuery() || '');
    res.upgrade({ user: query.get('user') || 'guest', rooms: new Set(), join: query.getAll('room') },
      req.getHeader('sec-websocket-key'), req.getHeader('sec-websocket-protocol'),
      req.getHeader('sec-websocket-extensions'), context);
  },
  open: (ws) => ws.getUserData().join.forEach((room) => join(ws, room)),
  message: (ws, data) => {
    let f;
    try { f = JSON.parse(text.decode(data)); } catch { f = null; }
    const ref = f && typeof f.ref === 'string' ? f.ref : undefined;
    if (f && f.type === 'join') return join(ws, f.room);
    if (f && f.type === 'ping') return reply(ws, { type: 'pong' });
    if (!f || f.type !== 'send' || typeof f.body !== 'string') {
      return reply(ws, { type: 'error', code: 'bad_request', message: 'not a join, send or ping frame', ref });
    }
    if (!ws.getUserData().rooms.has(f.room)) {
      return reply(ws, { type: 'error', code: 'not_member', message: `join room '${f.room}' before sending to it`, ref });
    }
    const seq = (seqs.get(f.room) || 0) + 1;
    seqs.set(f.room, seq);
    const message = { type: 'message', room: f.room, seq, user: ws.getUserData().user, body: f.body, ts: Date.now() };
    app.publish(f.room, JSON.stringify(message), false); // every subscriber, the sender included
    reply(ws, { type: 'ack', ref, room: f.room, seq });
  },
});

app.listen('127.0.0.1', port, (listening) => {
  if (!listening) { console.error(`floor: cannot listen on 127.0.0.1:${port}`); process.exit(1); }
  console.log(`floor: listening on ws://127.0.0.1:${port}/ws (pid ${process.pid})`);
});
