// token.place chat page: talks to this gateway's OpenAI-compatible API (same origin, no build step, no CDN).
// The conversation lives in this page only; nothing is logged or stored, except the API key in sessionStorage.
"use strict";

const API = "/v1";
const MODELS_RETRY_MS = 2000;
const KEY_STORAGE = "tp-api-key";
// Sealed mode trusts the authorities of a bootstrap file. By default that is the gateway's own (trust on first
// use: a dishonest gateway could name its own network); a user pins theirs here, kept in localStorage.
const BOOTSTRAP_STORAGE = "tp-bootstrap";
// A gateway this page did not come from loopback for is someone else's: requests are sealed to the GPU node
// (docs/PROTOCOL.md section 9; `?sealed` forces it), so the gateway carries them without reading them.
const LOOPBACK_HOSTS = ["localhost", "127.0.0.1", "[::1]"];
const SEALED = !LOOPBACK_HOSTS.includes(location.hostname) || new URLSearchParams(location.search).has("sealed");
let sealedClient = null;

const $ = (id) => document.getElementById(id);
const els = {
  model: $("model"), maxTokens: $("max-tokens"), apiKey: $("api-key"), log: $("log"), error: $("error"),
  form: $("composer"), prompt: $("prompt"), send: $("send"), stop: $("stop"), clear: $("clear"), status: $("status"),
  mode: $("mode"), trust: $("trust"), trustText: $("trust-text"), bootstrap: $("bootstrap"), unpin: $("unpin"),
};
let history = [];
let controller = null; // the AbortController of the answer being streamed

function headers() {
  const result = { "Content-Type": "application/json" };
  const key = els.apiKey.value.trim();
  if (key) result.Authorization = `Bearer ${key}`;
  return result;
}

function showError(text) {
  els.error.textContent = text;
  els.error.hidden = !text;
}

function setStatus(text) {
  els.status.textContent = text;
}

async function errorOf(response) {
  let message = "";
  try {
    const body = await response.json();
    message = body && body.error && body.error.message;
  } catch (_) {
    // not JSON: the status says enough
  }
  return new Error(`${response.status}: ${message || response.statusText || "request failed"}`);
}

async function loadModels() {
  try {
    const response = await fetch(`${API}/models`, { headers: headers() });
    if (!response.ok) throw await errorOf(response);
    const ids = (await response.json()).data.map((model) => model.id);
    const chosen = els.model.value;
    els.model.replaceChildren(...ids.map((id) => new Option(id, id, false, id === chosen)));
    if (ids.length) {
      showError("");
      setStatus(`${ids.length} model${ids.length === 1 ? "" : "s"} on the network`);
      return;
    }
    setStatus("No model on the network yet; looking again…");
  } catch (error) {
    showError(`Could not list models: ${error.message}`);
  }
  setTimeout(loadModels, MODELS_RETRY_MS);
}

function addMessage(role, text) {
  const div = document.createElement("div");
  div.className = `message ${role}`;
  div.textContent = text;
  els.log.append(div);
  div.scrollIntoView({ block: "end" });
  return div;
}

function setBusy(busy) {
  els.send.disabled = busy;
  els.stop.disabled = !busy;
}

// Server-sent events: yields the data of each event ("[DONE]" included) as it arrives.
async function* sseData(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value.replace(/\r\n/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = block.split("\n").filter((line) => line.startsWith("data:"))
          .map((line) => line.slice(5).replace(/^ /, "")).join("\n");
        if (data) yield data;
      }
    }
  } finally {
    reader.releaseLock();
  }
}

function pinnedBootstrap() {
  const text = localStorage.getItem(BOOTSTRAP_STORAGE);
  return text ? JSON.parse(text) : null;
}

function showTrust() {
  const pinned = pinnedBootstrap();
  els.trust.hidden = false;
  els.unpin.hidden = !pinned;
  els.trustText.textContent = pinned
    ? `Trusting your pinned bootstrap file: network ${pinned.network}, ${pinned.threshold} of ` +
      `${pinned.authorities.length} authorities.`
    : "Trusting this gateway's bootstrap file (its choice of network authorities). Pin your own to check " +
      "the gateway against it.";
}

async function pin() {
  const file = els.bootstrap.files[0];
  if (!file) return;
  try {
    const bootstrap = JSON.parse(await file.text());
    const { trustOf } = await import("/static/sealed.bundle.js");
    trustOf(bootstrap); // refuse what is not a bootstrap file before keeping it
    localStorage.setItem(BOOTSTRAP_STORAGE, JSON.stringify(bootstrap));
    showError("");
  } catch (error) {
    showError(`That file is not a bootstrap file: ${error.message}`);
  }
  els.bootstrap.value = "";
  sealedClient = null; // the next request verifies the directory against the new anchor
  showTrust();
}

function unpin() {
  localStorage.removeItem(BOOTSTRAP_STORAGE);
  sealedClient = null;
  showTrust();
}

async function sealed() {
  if (!sealedClient) {
    const { SealedClient, trustOf } = await import("/static/sealed.bundle.js");
    const pinned = pinnedBootstrap();
    sealedClient = new SealedClient({ baseURL: location.origin + API, trust: pinned ? trustOf(pinned) : null });
  }
  sealedClient.apiKey = els.apiKey.value.trim() || null;
  return sealedClient;
}

function showDelta(output, answer, delta) {
  if (!delta || !delta.content) return answer;
  answer += delta.content;
  output.textContent = answer;
  output.scrollIntoView({ block: "end" });
  return answer;
}

async function streamSealed(request, output, signal) {
  const client = await sealed();
  const chunks = await client.chat.completions.create({ ...request, signal });
  const node = client.lastNode;
  els.mode.textContent = `Sealed to the node: ${node.nodeId.slice(0, 16)}…, model ${node.model} ` +
    `(GGUF sha256 ${node.sha256.slice(0, 16)}…). The gateway carries your words without reading them.`;
  let answer = "";
  for await (const chunk of chunks) {
    answer = showDelta(output, answer, chunk.choices[0] && chunk.choices[0].delta);
  }
  return answer;
}

async function streamAnswer(output, signal) {
  const request = {
    model: els.model.value,
    messages: history,
    stream: true,
    max_tokens: Number(els.maxTokens.value) || undefined,
  };
  if (SEALED) return streamSealed(request, output, signal);
  const response = await fetch(`${API}/chat/completions`, {
    method: "POST", headers: headers(), body: JSON.stringify(request), signal,
  });
  if (!response.ok) throw await errorOf(response);
  let answer = "";
  for await (const data of sseData(response.body)) {
    if (data === "[DONE]") break;
    const event = JSON.parse(data);
    if (event.error) throw new Error(event.error.message || "the answer failed");
    answer = showDelta(output, answer, event.choices && event.choices[0] && event.choices[0].delta);
  }
  return answer;
}

async function send(event) {
  event.preventDefault();
  const text = els.prompt.value.trim();
  if (!text || controller) return;
  if (!els.model.value) {
    showError("No model to ask yet: the network has not listed one.");
    return;
  }
  showError("");
  history.push({ role: "user", content: text });
  addMessage("user", text);
  els.prompt.value = "";
  const output = addMessage("assistant", "");
  output.dataset.state = "streaming";
  controller = new AbortController();
  setBusy(true);
  setStatus("Answering…");
  try {
    const answer = await streamAnswer(output, controller.signal);
    history.push({ role: "assistant", content: answer });
    output.dataset.state = "done";
    setStatus("");
  } catch (error) {
    if (error.name === "AbortError") {
      output.dataset.state = "stopped";
      history.push({ role: "assistant", content: output.textContent });
      setStatus("Stopped.");
    } else {
      output.dataset.state = "error";
      history.pop(); // the question was not answered: leave it out of the next request
      showError(error.message);
      setStatus("");
    }
  } finally {
    controller = null;
    setBusy(false);
  }
}

function stop() {
  if (controller) controller.abort();
}

function clearChat() {
  stop();
  history = [];
  els.log.replaceChildren();
  showError("");
  setStatus("");
}

els.mode.textContent = SEALED
  ? "Sealed mode: each request is encrypted to the GPU node that answers it; this gateway cannot read it."
  : "Local gateway: it encrypts your words for the overlay itself.";
if (SEALED) {
  showTrust();
  els.bootstrap.addEventListener("change", pin);
  els.unpin.addEventListener("click", unpin);
}
els.apiKey.value = sessionStorage.getItem(KEY_STORAGE) || "";
els.apiKey.addEventListener("change", () => {
  sessionStorage.setItem(KEY_STORAGE, els.apiKey.value.trim());
  loadModels();
});
els.form.addEventListener("submit", send);
els.stop.addEventListener("click", stop);
els.clear.addEventListener("click", clearChat);
els.prompt.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey) {
    event.preventDefault();
    els.form.requestSubmit();
  }
});
loadModels();
