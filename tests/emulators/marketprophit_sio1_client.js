// Market Prophit's documented client, socket.io-client 1.x, called exactly as the docs do:
//   io.connect(url, { query: 'token=' + token })   (reconnection off so a test ends)
// Usage: node marketprophit_sio1_client.js URL TOKEN COUNT  -> one JSON line on stdout.
const io = require('socket.io-client');
const [url, token, count] = process.argv.slice(2);
const socket = io.connect(url, { query: 'token=' + token, reconnection: false });
const out = { acks: [], res: [] };
const finish = (code, extra) => { console.log(JSON.stringify(Object.assign(out, extra))); process.exit(code); };
socket.on('connect', () => {
  socket.emit('subscribe', { path: '/real-time/crowd-sentiment', method: 'get', params: { ticker: 'AAPL' } },
    (err) => out.acks.push(err === undefined ? 'undefined' : err));
  socket.emit('subscribe', { path: '/real-time/nope', method: 'get', params: { ticker: 'AAPL' } },
    (err) => out.acks.push(err));
});
socket.on('res', (res) => {
  out.res.push(res);
  if (out.res.length >= Number(count)) finish(0, { transport: socket.io.engine.transport.name });
});
socket.on('err', (err) => { out.err = err; });
socket.on('error', (e) => finish(3, { error: e }));
socket.on('connect_error', (e) => finish(4, { connect_error: String(e) }));
setTimeout(() => finish(5, { timeout: true }), 8000);
