// The relay's consent page (GET /v1/grant, served by the relay on its own
// origin, docs/protocol.md "Grants"). An app opens it with requestGrant()
// (web/byok-relay.js): in a popup, the request comes by postMessage from
// window.opener and the requesting origin is that message's origin, which
// the browser sets; in a full-page redirect, it comes in this page's
// fragment and the origin is that of its return_to address. The user sees
// the origin and the scope, pastes the key, approves; the page seals the key
// to the relay (WebCrypto HPKE) in POST /v1/grants and hands the grant, never
// the key, back to that origin only.
import { sealedFetch, relayErrorCode, RelayClientError, webCryptoX25519 } from './byok-relay.js';

const $ = (id) => document.getElementById(id);
// The relay's public URL: this page's address without /v1/grant (a public path prefix is kept).
const relayBase = location.origin + location.pathname.replace(/\/v1\/grant\/?$/, '');

function fromB64url(text) {
  const b = atob(text.replace(/-/g, '+').replace(/_/g, '/'));
  return new TextDecoder().decode(Uint8Array.from(b, (c) => c.charCodeAt(0)));
}
function toB64url(text) {
  const bytes = new TextEncoder().encode(text);
  return btoa(String.fromCharCode(...bytes)).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

// The request as the app sent it, checked field by field; null if unusable.
function checkRequest(r) {
  const str = (s) => typeof s === 'string' && s.length > 0 && s.length <= 200;
  if (!r || r.type !== 'byok-grant-request' || r.v !== 1 || !str(r.provider) || !/^[A-Za-z0-9_-]+$/.test(r.provider) ||
      !Array.isArray(r.paths) || r.paths.length === 0 || r.paths.length > 32 ||
      !r.paths.every((p) => str(p) && p.startsWith('/')) ||
      (r.models !== undefined && (!Array.isArray(r.models) || r.models.length > 64 || !r.models.every(str))) ||
      !Number.isSafeInteger(r.ttl_s) || r.ttl_s <= 0 ||
      !r.jwk || r.jwk.kty !== 'EC' || r.jwk.crv !== 'P-256' || !str(r.jwk.x) || !str(r.jwk.y) ||
      (r.signingKey !== undefined && r.signingKey !== null && !str(r.signingKey))) {
    return null;
  }
  return r;
}

function showError(message, code) {
  const e = $('error');
  e.textContent = message;
  if (code) {
    e.dataset.code = code;
  }
  e.hidden = false;
}

function lifetime(s) {
  if (s % 3600 === 0) {
    return `${s / 3600} hour${s === 3600 ? '' : 's'}`;
  }
  if (s % 60 === 0) {
    return `${s / 60} minute${s === 60 ? '' : 's'}`;
  }
  return `${s} seconds`;
}

function show(request, origin, deliver) {
  $('waiting').hidden = true;
  $('asker').textContent = origin;
  $('relay-origin').textContent = location.origin;
  $('scope-provider').textContent = request.provider;
  $('scope-paths').textContent = request.paths.join(', ');
  $('scope-models').textContent = request.models && request.models.length ? request.models.join(', ') : 'any model';
  $('scope-ttl').textContent = lifetime(request.ttl_s);
  $('request').hidden = false;
  document.title = `${origin} asks to use your API key – byok-relay`;
  $('key').focus();
  // This page seals with HPKE in WebCrypto only (it carries no libsodium for a
  // sealed-box fallback): say so before the user types a key, not after.
  webCryptoX25519().then((ok) => {
    if (!ok) {
      $('key').disabled = true;
      $('approve').disabled = true;
      showError('This browser cannot seal your key for the relay: it lacks X25519 in WebCrypto. Open this page in '
        + 'Chrome or Edge 133+, Firefox 130+ or Safari 17+. Nothing was sent.', 'unsupported_browser');
    }
  });

  $('deny').addEventListener('click', () => deliver({ type: 'byok-grant-denied' }));
  $('approve-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    $('error').hidden = true;
    const input = $('key');
    if (!input.value) {
      showError('Paste your API key first.');
      return;
    }
    $('approve').disabled = true;
    try {
      const body = { provider: request.provider, paths: request.paths };
      if (request.models && request.models.length) {
        body.models = request.models;
      }
      Object.assign(body, { ttl_s: request.ttl_s, origin, cnf: { jwk: { crv: 'P-256', kty: 'EC', x: request.jwk.x,
                                                                            y: request.jwk.y } } });
      const send = sealedFetch(relayBase, () => input.value.trim(), { signingKey: request.signingKey ?? undefined });
      const res = await send(relayBase + '/v1/grants', {
        method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body),
      });
      if (res.status !== 201) {
        const code = await relayErrorCode(res);
        let message = `The relay refused (HTTP ${res.status})`;
        try {
          message += `: ${(await res.json()).error.message}`;
        } catch {
          // not the relay's JSON error
        }
        showError(message, code ?? undefined);
        return;
      }
      const { grant, exp, scope } = await res.json();
      input.value = '';
      $('request').hidden = true;
      $('done').textContent = `Done: ${origin} may use the key as shown until ${new Date(exp * 1000).toLocaleTimeString()}.`;
      $('done').hidden = false;
      deliver({ type: 'byok-grant', grant, exp, scope });
    } catch (e) {
      // Not a relay answer: the relay unreachable, or (the only other case) a browser without
      // X25519 in WebCrypto, for which this page has no sealed-box fallback (no libsodium here).
      showError(e instanceof RelayClientError ? e.message
        : `Could not seal the key or reach the relay (${e.name}). This page needs a browser with X25519 in WebCrypto (Chrome 133+, Firefox 130+, Safari 17+).`,
      e.code);
    } finally {
      $('approve').disabled = false;
    }
  });
}

function start() {
  if (location.hash.startsWith('#request=')) {
    // Full-page redirect: the request in the fragment (never sent to a server), the answer
    // in the fragment of return_to, whose origin is the one shown and bound into the grant.
    let request = null;
    let returnTo = null;
    try {
      const r = JSON.parse(fromB64url(location.hash.slice('#request='.length)));
      returnTo = new URL(r.return_to);
      request = checkRequest(r);
    } catch {
      request = null;
    }
    history.replaceState(null, '', location.pathname);
    if (!request || (returnTo.protocol !== 'https:' && returnTo.hostname !== 'localhost' &&
                     returnTo.hostname !== '127.0.0.1')) {
      showError('This grant request is malformed.');
      return;
    }
    returnTo.hash = '';
    show(request, returnTo.origin, (answer) => {
      const back = answer.type === 'byok-grant' ? 'byok_grant=' + toB64url(JSON.stringify(answer)) : 'byok_grant_denied';
      location.replace(`${returnTo.href}#${back}`);
    });
    return;
  }
  const opener = window.opener;
  if (!opener) {
    $('waiting').textContent = 'This page is opened by an app that asks to use your API key. Open it from the app.';
    return;
  }
  let shown = false;
  window.addEventListener('message', (ev) => {
    if (shown || ev.source !== opener) {
      return;
    }
    const request = checkRequest(ev.data);
    if (!request) {
      return;
    }
    shown = true;
    const origin = ev.origin;  // set by the browser: the app cannot claim another
    show(request, origin, (answer) => {
      opener.postMessage(answer, origin);  // to that origin only
      window.close();
    });
  });
  // The request carries nothing secret, so "ready" may go to any origin; the answer does not.
  opener.postMessage({ type: 'byok-grant-ready', v: 1 }, '*');
}

start();
