// The JS client against the same known answers as Python: RFC 9180 A.2.1 through @hpke/*, and
// tests/tp_net/vectors/sealed.json (a sealed request and its chunks) recomputed byte for byte.
// The bundle the gateway serves is checked always (it needs nothing installed); the source too once
// `npm ci` has installed its dependencies.
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { test } from "node:test";

const sources = [new URL("../../tp_gateway/static/sealed.bundle.js", import.meta.url)];
if (existsSync(new URL("../node_modules/@hpke/core", import.meta.url))) sources.push(new URL("../src/sealed.js", import.meta.url));

const vectors = new URL("../../tests/tp_net/vectors/", import.meta.url);
const load = (name) => JSON.parse(readFileSync(new URL(name, vectors), "utf8"));
const hex = (bytes) => Buffer.from(bytes).toString("hex");
for (const source of sources) {
const { ResponseOpener, SealedError, fromHex, newSuite, sealRequest, trustOf } = await import(source);
const name = source.pathname.split("/").slice(-2).join("/");
const unhex = (text) => (text ? fromHex(text) : new Uint8Array(0));

test(`${name}: RFC 9180 A.2.1 through @hpke`, async () => {
  const v = load("hpke_x25519_sha256_chacha20poly1305.json");
  const suite = newSuite();
  const receiver = await suite.kem.deriveKeyPair(unhex(v.ikmR));
  assert.equal(hex(await suite.kem.serializePublicKey(receiver.publicKey)), v.pkRm);
  const sender = await suite.createSenderContext({
    recipientPublicKey: receiver.publicKey,
    info: unhex(v.info),
    ekm: unhex(v.ikmE),
  });
  assert.equal(hex(sender.enc), v.enc);
  let seq = 0;
  for (const c of v.encryptions) {
    for (; seq < c.seq; seq++) await sender.seal(new Uint8Array(0), new Uint8Array(0));
    assert.equal(hex(await sender.seal(unhex(c.pt), unhex(c.aad))), c.ct);
    seq++;
  }
  for (const e of v.exports) assert.equal(hex(await sender.export(unhex(e.context), e.length)), e.value);
});

test(`${name}: a sealed request and its chunks: the same bytes as Python`, async () => {
  const v = load("sealed.json");
  const request = await sealRequest(unhex(v.node_id), unhex(v.public_key), v.document, v.now, {
    nonce: unhex(v.nonce),
    ephemeralIkm: unhex(v.ephemeral_ikm),
  });
  assert.equal(hex(request.data), v.sealed);
  const opener = new ResponseOpener(request);
  const opened = [];
  for (const chunk of v.chunks) opened.push(await opener.open(unhex(chunk)));
  assert.deepEqual(opened, [...v.messages, null]);
  opener.finish();
});

test(`${name}: changed, reordered and cut-short answers are refused`, async () => {
  const v = load("sealed.json");
  const request = await sealRequest(unhex(v.node_id), unhex(v.public_key), v.document, v.now, {
    nonce: unhex(v.nonce),
    ephemeralIkm: unhex(v.ephemeral_ikm),
  });
  const chunks = v.chunks.map(unhex);
  const changed = chunks[1].slice();
  changed[3] ^= 1;
  let opener = new ResponseOpener(request);
  await opener.open(chunks[0]);
  await assert.rejects(opener.open(changed), SealedError);
  opener = new ResponseOpener(request);
  await opener.open(chunks[0]);
  await assert.rejects(opener.open(chunks[2]), SealedError); // the final chunk where chunk 1 is due
  opener = new ResponseOpener(request);
  await opener.open(chunks[0]);
  await opener.open(chunks[1]);
  assert.throws(() => opener.finish(), SealedError);
});

test(`${name}: a pinned bootstrap file becomes the trust anchor; anything else is refused`, () => {
  const bootstrap = JSON.parse(readFileSync(new URL("../../bootstrap/default.json", import.meta.url), "utf8"));
  const trust = trustOf(bootstrap);
  assert.equal(trust.network, bootstrap.network);
  assert.equal(trust.threshold, bootstrap.threshold);
  assert.deepEqual(trust.authorities, bootstrap.authorities.map((a) => a.node_id));
  for (const bad of [null, {}, { ...bootstrap, threshold: 9 }, { ...bootstrap, authorities: [{ node_id: "zz" }] }]) {
    assert.throws(() => trustOf(bad), SealedError);
  }
});
}
