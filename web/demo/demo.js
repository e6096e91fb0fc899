// The demo page: one prompt, sealed per request, the answer streamed in.
// OpenAI-shaped providers go through the official openai client with
// sealedFetch as its fetch; Anthropic's Messages API is read with fetch and
// a small SSE reader, to show sealedFetch on its own.
import OpenAI from 'openai';
import { sealedFetch, createKeyStore, isValidKey, RelayClientError } from '../byok-relay.js';

// The relay serves this page at <relay>/web/demo/, so the relay is two levels
// up (a public_path_prefix included). Deliberately not configurable from the
// URL: a link must not be able to point a user's key at someone else's relay.
const relayUrl = new URL('../../', document.baseURI).href.replace(/\/$/, '');

// Every built-in provider of the relay (docs/operations.md, Providers): the
// OpenAI-compatible base path the openai client is pointed at, and a model
// to start from. Anthropic is read with its own Messages API below.
const PROVIDERS = {
  demo: { base: '/demo/v1', model: 'demo-model' },
  openai: { base: '/openai/v1', model: 'gpt-4o-mini' },
  anthropic: { model: 'claude-3-5-haiku-latest' },
  gemini: { base: '/gemini/v1beta/openai', model: 'gemini-2.0-flash' },
  mistral: { base: '/mistral/v1', model: 'mistral-small-latest' },
  groq: { base: '/groq/v1', model: 'llama-3.3-70b-versatile' },
  openrouter: { base: '/openrouter/v1', model: 'openai/gpt-4o-mini' },
  deepseek: { base: '/deepseek', model: 'deepseek-chat' },
  xai: { base: '/xai/v1', model: 'grok-3-mini' },
  together: { base: '/together/v1', model: 'meta-llama/Llama-3.3-70B-Instruct-Turbo' },
};
const DEFAULT_MODELS = Object.fromEntries(Object.entries(PROVIDERS).map(([name, p]) => [name, p.model]));

// What to do about each relay error code (docs/protocol.md); the relay's own
// message is shown as well.
const RELAY_HINTS = {
  missing_seal: 'The request carried no seal.',
  unknown_kid: 'The relay rotated its key; the page fetched the new one and tried again, and it still failed.',
  bad_seal: 'The relay could not open or read the seal. Check that the key contains no spaces or line breaks.',
  seal_expired: "Your device's clock is too far from the relay's, even after correcting it once. Check the date and time settings.",
  seal_mismatch: 'The request changed between sealing and arrival (a proxy or extension rewriting it?).',
  seal_replayed: 'This seal was already used once; every request needs a new one.',
  bad_request: 'The relay could not read the request.',
  unknown_route: 'This relay does not forward to that provider or path.',
  method_not_allowed: 'The relay does not accept this method on this route.',
  request_timeout: 'The request did not reach the relay in time.',
  body_too_large: 'The prompt is larger than this relay accepts.',
  headers_too_large: 'The request headers are larger than this relay accepts.',
  rate_limited: 'Too many requests: wait a little and try again.',
  upstream_unreachable: 'The relay could not reach the provider.',
  upstream_bad_response: 'The provider sent an answer the relay could not read.',
  upstream_timeout: 'The provider did not answer in time.',
  content_flagged: 'The moderation check this relay runs for the provider flagged the prompt; it was not sent.',
  moderation_unavailable: 'The moderation check could not be made, so the prompt was not sent. Try again later.',
  overloaded: 'The relay is busy: try again shortly.',
  internal_error: 'The relay failed to handle this request.',
  missing_proof: 'A grant was sent without its Byok-Proof header.',
  bad_proof: 'The grant\'s proof of possession did not match this request (or the device clock is far off).',
  proof_replayed: 'This proof was already used once; every request needs a new one.',
  bad_grant: 'The relay could not open the grant (rotated grant key, or a damaged token): ask for a new grant.',
  grant_expired: 'The grant has expired: ask the user for a new one.',
  origin_mismatch: 'The grant was given to another site.',
  model_not_allowed: 'The grant does not cover this model.',
  path_not_allowed: 'The grant does not cover this endpoint.',
  grant_too_long: 'The grant asked for a longer lifetime than this relay allows.',
};

const $ = (id) => document.getElementById(id);
const form = $('ask');
const keyInput = $('key');
const remember = $('remember');
const providerSel = $('provider');
const modelInput = $('model');
const promptInput = $('prompt');
const sendBtn = $('send');
const stopBtn = $('stop');
const statusEl = $('status');
const answerEl = $('answer');
const errorEl = $('error');

$('relay-url').textContent = relayUrl;
$('keys-link').href = relayUrl + '/v1/keys';

// The key lives in this store (memory) unless the user asks for the tab.
let store = createKeyStore();
const remembered = createKeyStore({ storage: 'session' });
if (remembered.has()) {
  store = remembered;
  remember.checked = true;
  keyInput.value = remembered.get();
}
remember.addEventListener('change', () => {
  const current = store.has() ? store.get() : null;
  if (remember.checked) {
    store = remembered;
    if (current) {
      store.set(current);
    }
  } else {
    remembered.clear();
    store = createKeyStore();
    if (current) {
      store.set(current);
    }
  }
});

const fetchSealed = sealedFetch(relayUrl, () => store.get());

let modelEdited = false;
modelInput.value = DEFAULT_MODELS[providerSel.value];
modelInput.addEventListener('input', () => {
  modelEdited = true;
});
providerSel.addEventListener('change', () => {
  if (!modelEdited) {
    modelInput.value = DEFAULT_MODELS[providerSel.value] ?? '';
  }
});

let running = null;
stopBtn.addEventListener('click', () => running?.abort());

function setBusy(busy) {
  sendBtn.disabled = busy;
  stopBtn.disabled = !busy;
  answerEl.setAttribute('aria-busy', String(busy));
}

function showError(title, code, message, hint) {
  errorEl.replaceChildren();
  const p = document.createElement('p');
  const strong = document.createElement('strong');
  strong.textContent = title;
  p.append(strong);
  if (code) {
    p.append(' ');
    const c = document.createElement('code');
    c.textContent = code;
    p.append(c);
  }
  errorEl.append(p);
  for (const line of [message, hint]) {
    if (line) {
      const q = document.createElement('p');
      q.textContent = line;
      errorEl.append(q);
    }
  }
  errorEl.dataset.code = code ?? '';
  errorEl.hidden = false;
}

// Sorts any failure into: relay error (with its code), provider error,
// client-side problem, or the network.
function reportError(e, provider) {
  if (e?.name === 'AbortError' || e instanceof OpenAI.APIUserAbortError) {
    statusEl.textContent = 'Stopped.';
    return;
  }
  // The openai client wraps anything its fetch throws as a connection error.
  if (e instanceof OpenAI.APIConnectionError && e.cause instanceof RelayClientError) {
    e = e.cause;
  }
  const info = errorInfo(e);
  if (info.type === 'relay_error') {
    showError(`Relay error (HTTP ${info.status ?? '?'}):`, info.code, info.message, RELAY_HINTS[info.code]);
  } else if (info.status) {
    showError(`${provider} error (HTTP ${info.status}):`, info.code, info.message,
      info.status === 401 ? 'The provider refused the key.' : null);
  } else if (e instanceof RelayClientError) {
    showError('Could not send:', e.code, e.message.replace(/^byok-relay: /, ''));
  } else if (e instanceof OpenAI.APIConnectionError || e instanceof TypeError) {
    showError('Network error:', null, 'The relay could not be reached.', String(e.message ?? e));
  } else {
    showError('Error:', null, String(e?.message ?? e));
  }
  statusEl.textContent = 'Failed.';
}

function errorInfo(e) {
  if (e instanceof OpenAI.APIError) {
    const body = e.error ?? {};
    return { status: e.status, type: e.type ?? body.type, code: e.code ?? body.code,
             message: body.message ?? e.message };
  }
  if (e && e.httpStatus) {
    return { status: e.httpStatus, type: e.type, code: e.code, message: e.message };
  }
  return {};
}

class HttpError extends Error {
  constructor(status, body) {
    // Relay errors: {"error":{"message","type":"relay_error","code"}};
    // Anthropic: {"type":"error","error":{"type","message"}}.
    const err = body?.error ?? {};
    super(err.message ?? `HTTP ${status}`);
    this.httpStatus = status;
    this.type = err.type;
    this.code = err.code ?? (err.type !== 'relay_error' ? err.type : undefined);
  }
}

async function* openaiText(provider, model, prompt, signal) {
  const client = new OpenAI({
    baseURL: relayUrl + (PROVIDERS[provider]?.base ?? `/${provider}/v1`),
    apiKey: 'sealed-by-relay',     // replaced by the seal; never sent anywhere
    fetch: fetchSealed,
    dangerouslyAllowBrowser: true, // the real key is not in this client
    maxRetries: 0,
  });
  const params = { model, stream: true, messages: [{ role: 'user', content: prompt }] };
  if (provider === 'demo') {
    // The mock provider streams this many pieces at this pace.
    params.mock = { events: 24, interval_ms: 120 };
  }
  const stream = await client.chat.completions.create(params, { signal });
  for await (const chunk of stream) {
    const piece = chunk.choices?.[0]?.delta?.content;
    if (piece) {
      yield piece;
    }
  }
}

// Server-sent events from a fetch Response, one {event, data} at a time.
async function* sse(res) {
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) {
      return;
    }
    buf += value.replace(/\r\n?/g, '\n');
    let cut;
    while ((cut = buf.indexOf('\n\n')) >= 0) {
      const block = buf.slice(0, cut);
      buf = buf.slice(cut + 2);
      let event = 'message';
      const data = [];
      for (const line of block.split('\n')) {
        if (line.startsWith('event:')) {
          event = line.slice(6).trim();
        } else if (line.startsWith('data:')) {
          data.push(line.slice(5).replace(/^ /, ''));
        }
      }
      if (data.length) {
        yield { event, data: data.join('\n') };
      }
    }
  }
}

async function* anthropicText(model, prompt, signal) {
  const res = await fetchSealed(`${relayUrl}/anthropic/v1/messages`, {
    method: 'POST',
    signal,
    headers: { 'content-type': 'application/json', 'anthropic-version': '2023-06-01' },
    body: JSON.stringify({ model, max_tokens: 1024, stream: true, messages: [{ role: 'user', content: prompt }] }),
  });
  if (!res.ok) {
    let body = null;
    try {
      body = await res.json();
    } catch {
      // not JSON: the status says enough
    }
    throw new HttpError(res.status, body);
  }
  for await (const { event, data } of sse(res)) {
    const j = JSON.parse(data);
    if (event === 'error' || j.type === 'error') {
      throw new HttpError(res.status, j);
    }
    if (j.type === 'content_block_delta' && j.delta?.type === 'text_delta') {
      yield j.delta.text;
    }
    if (j.type === 'message_stop') {
      return;
    }
  }
}

form.addEventListener('submit', async (ev) => {
  ev.preventDefault();
  errorEl.hidden = true;
  const key = keyInput.value.trim();
  if (!isValidKey(key)) {
    showError('Check the key:', null, 'Enter your API key: visible characters only, no spaces or line breaks.');
    keyInput.focus();
    return;
  }
  store.set(key);
  const provider = providerSel.value;
  const model = modelInput.value.trim();
  const prompt = promptInput.value;
  const label = providerSel.selectedOptions[0].textContent.split(' (')[0];

  answerEl.textContent = '';
  const text = document.createTextNode('');
  answerEl.append(text);
  running = new AbortController();
  setBusy(true);
  statusEl.textContent = 'Sealing and sending…';
  const start = performance.now();
  let pieces = 0;
  try {
    const gen = provider === 'anthropic' ? anthropicText(model, prompt, running.signal)
      : openaiText(provider, model, prompt, running.signal);
    for await (const piece of gen) {
      if (pieces === 0) {
        statusEl.textContent = 'Streaming…';
      }
      pieces += 1;
      text.appendData(piece);
    }
    statusEl.textContent = `Done: ${pieces} pieces in ${Math.round(performance.now() - start)} ms.`;
  } catch (e) {
    reportError(e, label);
  } finally {
    running = null;
    setBusy(false);
  }
});
