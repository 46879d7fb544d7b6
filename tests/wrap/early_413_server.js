// The early 413 of early_413_server.py from a Node http server (Debian's nodejs, unmodified):
// a POST whose Content-Length is over the limit gets a 413 page right after its head, and once
// the page is written (res.end's callback) the socket is destroyed without reading the body, as
// Node servers that refuse an upload do. libuv closes sockets with syscall(SYS_close, fd).
// Prints "port P" first; exits after REQUESTS requests.
//
//   node early_413_server.js [PAGE_BYTES] [LIMIT] [REQUESTS]
'use strict';
const http = require('http');

const pageBytes = Number(process.argv[2] || 1 << 20);
const limit = Number(process.argv[3] || 1 << 20);
const requests = Number(process.argv[4] || 20);

// byte i = ALPHABET[(i + i / 4093) % 59], as early_413_server.py's page()
const ALPHABET = Buffer.from('abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVW');
const page = Buffer.alloc(pageBytes);
for (let i = 0; i < pageBytes; ++i) page[i] = ALPHABET[(i + Math.floor(i / 4093)) % ALPHABET.length];

let served = 0;
const server = http.createServer((req, res) => {
  if (Number(req.headers['content-length'] || 0) > limit) {
    res.writeHead(413, {'Content-Type': 'application/octet-stream', 'Content-Length': pageBytes,
                        'Connection': 'close'});
    res.end(page, () => req.socket.destroy());
  } else {
    req.resume();
    req.on('end', () => res.end());
  }
  if (++served === requests) server.close();  // stops listening; exits once every socket is gone
});
server.listen(0, '127.0.0.1', () => console.log(`port ${server.address().port}`));
