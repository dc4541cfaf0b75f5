// Socket.IO 4 chat for bench/run.sh and chat-load's tests: the chat every
// Socket.IO tutorial writes, in the dialect `chat-load --protocol socketio`
// speaks (see loadtest/README.md): the client emits `join` with a room name and
// `send` with {room, body}; the server emits `message` with the object it got
// to everyone in the room, the sender included. No acks, no seqs, no history.
//   Usage: [REDIS_URL=redis://127.0.0.1:6379/] [SIO_FAULT=drop:N|dup:N] node server.js PORT
// REDIS_URL: rooms span instances through @socket.io/redis-adapter (bench/run.sh
// sets it); without it, the default in-memory adapter.
// SIO_FAULT (tests only): drop, or emit twice, every Nth message sent, so a
// test can show that chat-load's audit catches it. chat-load's join probes
// (body `join:<client>`) are not counted: a lost probe would be a connect error.
const { createServer } = require('node:http');
const { Server } = require('socket.io');

const port = Number(process.argv[2] || 9002);
const redisUrl = process.env.REDIS_URL;

function parseFault(text) {
  if (!text) return null;
  const m = /^(drop|dup):([1-9][0-9]*)$/.exec(text);
  if (!m) {
    console.error(`socketio: SIO_FAULT='${text}' is not drop:N or dup:N`);
    process.exit(2);
  }
  return { kind: m[1], every: Number(m[2]), seen: 0 };
}

async function adapter() {
  if (!redisUrl) return undefined;
  const { createAdapter } = require('@socket.io/redis-adapter');
  const { createClient } = require('redis');
  const pub = createClient({ url: redisUrl });
  const sub = pub.duplicate();
  await Promise.all([pub.connect(), sub.connect()]);
  return createAdapter(pub, sub);
}

async function main() {
  const fault = parseFault(process.env.SIO_FAULT);
  const http = createServer();
  const io = new Server(http, { transports: ['websocket'], adapter: await adapter() });
  io.on('connection', (socket) => {
    socket.on('join', (room) => {
      if (typeof room === 'string') socket.join(room);
    });
    socket.on('send', (msg) => {
      if (!msg || typeof msg.room !== 'string' || !socket.rooms.has(msg.room)) return;
      let times = 1;
      const probe = typeof msg.body === 'string' && msg.body.startsWith('join:');
      if (fault && !probe && ++fault.seen % fault.every === 0) {
        times = fault.kind === 'drop' ? 0 : 2;
      }
      for (let i = 0; i < times; i++) io.to(msg.room).emit('message', msg);
    });
  });
  http.listen(port, '127.0.0.1', () => {
    const via = redisUrl ? 'redis adapter' : 'in-memory adapter';
    console.log(`socketio: listening on ws://127.0.0.1:${http.address().port}/socket.io/ (${via}, pid ${process.pid})`);
  });
}

main().catch((e) => {
  console.error(`socketio: ${e.message}`);
  process.exit(1);
});
