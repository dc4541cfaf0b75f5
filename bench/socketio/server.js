// Socket.IO 4 with @socket.io/redis-adapter, for bench/run.sh: the chat every
// Socket.IO tutorial writes, in the dialect `chat-load --protocol socketio`
// speaks (see loadtest/README.md): the client emits `join` with a room name and
// `send` with {room, body}; the server emits `message` with the object it got
// to everyone in the room, the sender included. No acks, no seqs, no history.
// bench/run.sh runs it only when chat-load has --protocol socketio.
//   Usage: REDIS_URL=redis://127.0.0.1:6379/ node server.js PORT
const { createServer } = require('node:http');
const { Server } = require('socket.io');
const { createAdapter } = require('@socket.io/redis-adapter');
const { createClient } = require('redis');

const port = Number(process.argv[2] || 9002);
const redisUrl = process.env.REDIS_URL;
if (!redisUrl) {
  console.error('socketio: set REDIS_URL (the adapter needs Redis)');
  process.exit(2);
}

async function main() {
  const pub = createClient({ url: redisUrl });
  const sub = pub.duplicate();
  await Promise.all([pub.connect(), sub.connect()]);
  const http = createServer();
  const io = new Server(http, { transports: ['websocket'], adapter: createAdapter(pub, sub) });
  io.on('connection', (socket) => {
    socket.on('join', (room) => {
      if (typeof room === 'string') socket.join(room);
    });
    socket.on('send', (msg) => {
      if (msg && typeof msg.room === 'string' && socket.rooms.has(msg.room)) {
        io.to(msg.room).emit('message', msg);
      }
    });
  });
  http.listen(port, '127.0.0.1', () => {
    console.log(`socketio: listening on ws://127.0.0.1:${port}/socket.io/ (pid ${process.pid})`);
  });
}

main().catch((e) => {
  console.error(`socketio: ${e.message}`);
  process.exit(1);
});
