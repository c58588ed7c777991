// token.place sealed requests (docs/PROTOCOL.md section 9) for browsers and Node 20+.
//
// The JavaScript twin of tp_net/protocol/sealed.py and tp_gateway/sealed_client.py: the client checks the directory's
// threshold signatures against its own trust anchor, picks a node, seals the request to the node's key (HPKE,
// RFC 9180: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20-Poly1305, from @hpke/*), sends it to any
// gateway, and opens the sealed answer chunk by chunk (counter nonces, a final chunk: a changed, dropped,
// reordered or cut-short answer is an error). The wire format is pinned by tests/tp_net/vectors/sealed.json,
// which the Python and JS tests both recompute byte for byte.
//
//   import { SealedClient } from "./sealed.js";
//   const client = new SealedClient({ baseURL: "https://gateway.example/v1", trust });
//   const answer = await client.chat.completions.create({ model, messages });
//   for await (const chunk of await client.chat.completions.create({ model, messages, stream: true })) ...

import { CipherSuite, HkdfSha256 } from "@hpke/core";
import { Chacha20Poly1305 } from "@hpke/chacha20poly1305";
import { DhkemX25519HkdfSha256 } from "@hpke/dhkem-x25519";
import { decode, encode } from "@msgpack/msgpack";
import { ed25519 } from "@noble/curves/ed25519.js";

import * as C from "./constants.generated.js";

const te = new TextEncoder();

// Every size, label and limit comes from Python, their one home (constants.generated.js, `make js`).
export const { SEALED_VERSION, SUITE_IDS, SEALED_REQUEST_BUCKETS_BYTES } = C;
const INFO_LABEL = te.encode(C.INFO_LABEL);
const EXPORT_LABEL = te.encode(C.EXPORT_LABEL);
const FINAL_AAD = te.encode(C.FINAL_AAD);
const SIGNED_PREFIX = te.encode(C.SIGNED_PREFIX);
const {
  NODE_ID_BYTES, KEY_BYTES, REQUEST_NONCE_BYTES, RESPONSE_NONCE_BYTES, AEAD_KEY_BYTES, AEAD_NONCE_BYTES,
  SEALED_CHUNK_BYTES_MAX, SEALED_RESPONSE_CHUNKS_MAX, CLOCK_SKEW_ALLOWED_S, WEIGHT_MIN, EVENT_BYTES_MAX,
} = C;

export class SealedError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

export function newSuite() {
  return new CipherSuite({
    kem: new DhkemX25519HkdfSha256(),
    kdf: new HkdfSha256(),
    aead: new Chacha20Poly1305(),
  });
}

const concat = (...parts) => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
};

function header(nodeId, publicKey) {
  const ids = new Uint8Array(7);
  const view = new DataView(ids.buffer);
  view.setUint8(0, SEALED_VERSION);
  SUITE_IDS.forEach((id, i) => view.setUint16(1 + 2 * i, id));
  return concat(ids, nodeId, publicKey);
}

export function bucketBytes(length) {
  const bucket = SEALED_REQUEST_BUCKETS_BYTES.find((b) => length <= b);
  if (bucket === undefined) throw new SealedError("too_large", "the request is too large to seal");
  return bucket;
}

/** Seal `document` (an inference request) to node `nodeId` (32 bytes) with its sealing key `publicKey`.
 * `options.nonce` and `options.ephemeralIkm` are for known-answer tests only. */
export async function sealRequest(nodeId, publicKey, document, nowS, options = {}) {
  if (nodeId.length !== NODE_ID_BYTES || publicKey.length !== KEY_BYTES) throw new SealedError("malformed", "bad key");
  const suite = newSuite();
  const body = encode(document);
  const prefix = new Uint8Array(REQUEST_NONCE_BYTES + 8 + 4);
  prefix.set(options.nonce ?? crypto.getRandomValues(new Uint8Array(REQUEST_NONCE_BYTES)));
  const view = new DataView(prefix.buffer);
  view.setBigUint64(REQUEST_NONCE_BYTES, BigInt(Math.floor(nowS)));
  view.setUint32(REQUEST_NONCE_BYTES + 8, body.length);
  const plaintext = concat(prefix, body);
  const padded = new Uint8Array(bucketBytes(plaintext.length));
  padded.set(plaintext);
  const head = header(nodeId, publicKey);
  const recipientPublicKey = await suite.kem.deserializePublicKey(publicKey);
  const params = { recipientPublicKey, info: concat(INFO_LABEL, head) };
  if (options.ephemeralIkm) params.ekm = options.ephemeralIkm;
  const sender = await suite.createSenderContext(params);
  const enc = new Uint8Array(sender.enc);
  const sealed = new Uint8Array(await sender.seal(padded));
  const secret = new Uint8Array(await sender.export(EXPORT_LABEL, AEAD_KEY_BYTES));
  return { data: concat(head, enc, sealed), enc, secret };
}

function chunkNonce(base, counter) {
  const nonce = base.slice();
  let c = counter;
  for (let i = AEAD_NONCE_BYTES - 1; i >= 0 && c > 0; i--) {
    nonce[i] ^= c & 0xff;
    c = Math.floor(c / 256);
  }
  return nonce;
}

// HKDF-Extract(salt, ikm) = HMAC-SHA256(salt, ikm), from WebCrypto: @hpke's extract takes only 32-byte
// salts, and this salt is enc || response_nonce (64 bytes), as in the chunked-OHTTP draft.
async function hmacSha256(salt, ikm) {
  const key = await crypto.subtle.importKey("raw", salt, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  return new Uint8Array(await crypto.subtle.sign("HMAC", key, ikm));
}

function unpadded(plaintext) {
  if (plaintext.length < 4) throw new SealedError("bad_padding", "a sealed chunk is too short");
  const length = new DataView(plaintext.buffer, plaintext.byteOffset).getUint32(0);
  const end = 4 + length;
  if (end > plaintext.length || plaintext.subarray(end).some((b) => b !== 0)) {
    throw new SealedError("bad_padding", "a sealed chunk has a bad length or padding");
  }
  return plaintext.subarray(4, end);
}

/** Opens one response's chunks in order: `open` gives a message, or null for the final chunk. */
export class ResponseOpener {
  constructor(request) {
    this.request = request;
    this.aead = null;
    this.baseNonce = null;
    this.counter = 0;
    this.finished = false;
  }

  async open(chunk) {
    if (this.finished) throw new SealedError("after_final", "a sealed chunk arrived after the final one");
    if (chunk.length > RESPONSE_NONCE_BYTES + SEALED_CHUNK_BYTES_MAX) throw new SealedError("too_large", "chunk too large");
    if (this.aead === null) {
      if (chunk.length < RESPONSE_NONCE_BYTES) throw new SealedError("bad_seal", "no response nonce");
      const suite = newSuite();
      const responseNonce = chunk.subarray(0, RESPONSE_NONCE_BYTES);
      chunk = chunk.subarray(RESPONSE_NONCE_BYTES);
      const prk = await hmacSha256(concat(this.request.enc, responseNonce), this.request.secret);
      const key = await suite.kdf.expand(prk, te.encode("key"), AEAD_KEY_BYTES);
      this.baseNonce = new Uint8Array(await suite.kdf.expand(prk, te.encode("nonce"), AEAD_NONCE_BYTES));
      this.aead = new Chacha20Poly1305().createEncryptionContext(key);
    }
    if (this.counter >= SEALED_RESPONSE_CHUNKS_MAX) throw new SealedError("too_many_chunks", "too many chunks");
    const nonce = chunkNonce(this.baseNonce, this.counter);
    let plaintext;
    let final = false;
    try {
      plaintext = new Uint8Array(await this.aead.open(nonce, chunk, new Uint8Array(0)));
    } catch {
      try {
        plaintext = new Uint8Array(await this.aead.open(nonce, chunk, FINAL_AAD));
      } catch {
        throw new SealedError("bad_seal", "a sealed chunk does not open (changed or out of order)");
      }
      final = true;
    }
    this.counter += 1;
    const body = unpadded(plaintext);
    if (final) {
      if (body.length) throw new SealedError("bad_final", "the final chunk carries data");
      this.finished = true;
      return null;
    }
    return decode(body);
  }

  finish() {
    if (!this.finished) throw new SealedError("truncated", "the sealed answer ended before its final chunk");
  }
}

// --- the directory -------------------------------------------------------------------------------------

const signedMessage = (domain, body) => concat(SIGNED_PREFIX, te.encode(domain), new Uint8Array([0]), body);
const hex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
export const fromHex = (text) => new Uint8Array(text.match(/../g).map((h) => parseInt(h, 16)));
const isBytes = (v) => v instanceof Uint8Array;

/** The nodes of a signed directory document, if `trust` ({network, authorities: [hex], threshold}) accepts
 * it: k distinct trusted signatures, its network, within its validity; descriptors signed by their node. */
export function verifyDirectory(data, trust, nowS) {
  const [body, signatures] = decode(data);
  if (!isBytes(body) || !Array.isArray(signatures)) throw new SealedError("bad_directory", "malformed document");
  const trusted = new Set(trust.authorities.map((a) => a.toLowerCase()));
  const signers = new Set();
  const message = signedMessage("directory", body);
  for (const pair of signatures) {
    const [id, signature] = pair;
    const idHex = isBytes(id) ? hex(id) : "";
    if (!trusted.has(idHex) || signers.has(idHex) || !isBytes(signature)) continue;
    if (ed25519.verify(signature, message, id)) signers.add(idHex);
  }
  if (signers.size < trust.threshold) {
    throw new SealedError("bad_directory", `${signers.size} trusted signatures, ${trust.threshold} needed`);
  }
  const [kind, network, validAfter, freshUntil, validUntil, descriptors, weightPairs] = decode(body);
  // The authorities' measured weights (PROTOCOL.md 7.4): a node's declared slots only ever lower its chance.
  const weights = new Map((Array.isArray(weightPairs) ? weightPairs : []).map(([id, w]) => [hex(id), Number(w)]));
  if (kind !== "directory" || network !== trust.network) throw new SealedError("bad_directory", "wrong network");
  if (nowS + CLOCK_SKEW_ALLOWED_S < validAfter || nowS > validUntil) {
    throw new SealedError("bad_directory", "the directory is not valid now");
  }
  const nodes = [];
  for (const [descriptorBody, signature] of descriptors) {
    const fields = decode(descriptorBody);
    if (fields[0] !== "node") continue;
    const [nodeId, published, expires] = [fields[1], Number(fields[6]), Number(fields[7])];
    if (!ed25519.verify(signature, signedMessage("descriptor", descriptorBody), nodeId)) {
      throw new SealedError("bad_directory", "a descriptor's signature does not verify");
    }
    if (published > Number(validAfter) + CLOCK_SKEW_ALLOWED_S || Number(validAfter) >= expires) {
      throw new SealedError("bad_directory", "a descriptor is not valid at the directory's time");
    }
    const models = fields[4].map((m) => ({
      modelId: m[0],
      sha256: hex(m[1]),
      maxConcurrent: m[5],
      load: m[6],
    }));
    const weight = weights.get(hex(nodeId)) ?? WEIGHT_MIN;
    nodes.push({ nodeId, models, weight, sealingKeys: fields.length === 10 ? fields[9] : [] });
  }
  return { nodes, freshUntil: Number(freshUntil) };
}

/** A node serving `model` that takes sealed requests, weighted by its measured weight times the share of its
 * slots that is free; by the weight alone when all are full (as tp_net.protocol.path_selection.choose_node). */
export function chooseNode(nodes, model, random = Math.random) {
  const offers = nodes
    .filter((n) => n.sealingKeys.length)
    .map((n) => [n, n.models.find((m) => m.modelId === model)])
    .filter(([, offer]) => offer);
  if (!offers.length) throw new SealedError("model_not_found", `no node serves model ${model} sealed`);
  const free = offers
    .map(([n, o]) => [n, o, (n.weight * Math.max(0, o.maxConcurrent - o.load)) / o.maxConcurrent])
    .filter(([, , f]) => f > 0);
  const weighted = free.length ? free : offers.map(([n, o]) => [n, o, n.weight]);
  let pick = random() * weighted.reduce((sum, w) => sum + w[2], 0);
  for (const [node, offer, weight] of weighted) {
    pick -= weight;
    if (pick < 0) return { node, offer };
  }
  const [node, offer] = weighted[weighted.length - 1];
  return { node, offer };
}

// --- the client ----------------------------------------------------------------------------------------

const REQUEST_FIELDS = [
  "model", "messages", "max_tokens", "temperature", "top_p", "stop", "seed", "presence_penalty", "frequency_penalty",
];

/** The node's inference document (PROTOCOL.md 6.1) for OpenAI chat fields. */
export function nodeDocument(params) {
  const doc = {};
  for (const field of REQUEST_FIELDS) if (params[field] !== undefined && params[field] !== null) doc[field] = params[field];
  if (doc.max_tokens === undefined && params.max_completion_tokens != null) doc.max_tokens = params.max_completion_tokens;
  return doc;
}

const b64 = (bytes) => btoa(String.fromCharCode(...bytes));
const unb64 = (text) => Uint8Array.from(atob(text), (c) => c.charCodeAt(0));

async function* sseData(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    if (buffer.length > EVENT_BYTES_MAX && buffer.indexOf("\n\n") < 0) {
      throw new ApiError(502, "upstream_error", "the gateway sent an over-long event");
    }
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      for (const line of event.split("\n")) if (line.startsWith("data: ")) yield JSON.parse(line.slice(6));
    }
  }
}

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** The trust anchor ({network, threshold, authorities: [hex]}) of a bootstrap file's JSON (bootstrap/*.json);
 * a SealedError when it is not one. */
export function trustOf(bootstrap) {
  const b = bootstrap ?? {};
  const authorities = Array.isArray(b.authorities) ? b.authorities.map((a) => a && a.node_id) : [];
  const valid = typeof b.network === "string" && Number.isInteger(b.threshold) && b.threshold >= 1 &&
    authorities.length >= b.threshold && authorities.every((a) => typeof a === "string" && /^[0-9a-f]{64}$/i.test(a));
  if (!valid) throw new SealedError("bad_bootstrap", "not a bootstrap file: network, threshold and authorities' node_id");
  return { network: b.network, threshold: b.threshold, authorities };
}

export class SealedClient {
  /** `trust`: {network, authorities: [hex node ids], threshold}, your own trust anchor; without it the
   * gateway's bootstrap file is taken (trust on first use). */
  constructor({ baseURL, apiKey = null, trust = null, fetch: fetcher = globalThis.fetch.bind(globalThis) }) {
    this.baseURL = baseURL.replace(/\/$/, "");
    this.apiKey = apiKey;
    this.trust = trust;
    this.fetch = fetcher;
    this.directory = null;
    this.lastNode = null; // {nodeId, model, sha256}: what the page shows
    this.chat = { completions: { create: (params) => this.create(params) } };
  }

  headers(extra = {}) {
    return this.apiKey ? { Authorization: `Bearer ${this.apiKey}`, ...extra } : extra;
  }

  async get(path) {
    const response = await this.fetch(this.baseURL + path, { headers: this.headers() });
    if (!response.ok) throw await apiError(response);
    return response;
  }

  async ensureDirectory() {
    if (!this.trust) this.trust = trustOf(await (await this.get("/sealed/bootstrap")).json());
    const now = Date.now() / 1000;
    if (!this.directory || now >= this.directory.freshUntil) {
      const data = new Uint8Array(await (await this.get("/sealed/directory")).arrayBuffer());
      this.directory = verifyDirectory(data, this.trust, now);
    }
    return this.directory;
  }

  async create(params) {
    const directory = await this.ensureDirectory();
    const { node, offer } = chooseNode(directory.nodes, params.model);
    this.lastNode = { nodeId: hex(node.nodeId), model: params.model, sha256: offer.sha256 };
    const request = await sealRequest(node.nodeId, node.sealingKeys[0], nodeDocument(params), Date.now() / 1000);
    const response = await this.fetch(this.baseURL + "/sealed", {
      method: "POST",
      headers: this.headers({ "Content-Type": "application/json" }),
      body: JSON.stringify({ node: hex(node.nodeId), sealed: b64(request.data) }),
      signal: params.signal,
    });
    if (!response.ok) throw await apiError(response);
    const messages = openMessages(response, request);
    const head = { id: "chatcmpl-" + hex(crypto.getRandomValues(new Uint8Array(12))), created: Math.floor(Date.now() / 1000), model: params.model };
    return params.stream ? streamChunks(head, messages) : collect(head, messages);
  }
}

async function apiError(response) {
  let error = {};
  try {
    error = (await response.json()).error ?? {};
  } catch {}
  return new ApiError(response.status, error.code ?? null, error.message ?? `HTTP ${response.status}`);
}

async function* openMessages(response, request) {
  const opener = new ResponseOpener(request);
  for await (const event of sseData(response)) {
    if (event.error) throw new ApiError(502, event.error.code ?? "upstream_error", event.error.message ?? "");
    const message = await opener.open(unb64(event.chunk));
    if (message === null) continue;
    if (message.error) throw new ApiError(502, message.error.code, message.error.message);
    yield message;
  }
  opener.finish();
}

async function* streamChunks(head, messages) {
  const base = { ...head, object: "chat.completion.chunk" };
  let first = true;
  for await (const message of messages) {
    if (message.text !== undefined) {
      const delta = first ? { role: "assistant", content: message.text } : { content: message.text };
      first = false;
      yield { ...base, choices: [{ index: 0, delta, finish_reason: null }] };
    } else if (message.finish_reason !== undefined) {
      yield { ...base, choices: [{ index: 0, delta: {}, finish_reason: message.finish_reason }], usage: message.usage ?? null };
    }
  }
}

async function collect(head, messages) {
  let content = "";
  let finish = null;
  let usage = null;
  for await (const message of messages) {
    if (message.text !== undefined) content += message.text;
    if (message.finish_reason !== undefined) [finish, usage] = [message.finish_reason, message.usage ?? null];
  }
  return {
    ...head,
    object: "chat.completion",
    choices: [{ index: 0, message: { role: "assistant", content }, finish_reason: finish }],
    usage,
  };
}
