// DPoP (RFC 9449) for the pages: they bind their tokens to a key pair made
// once and kept in IndexedDB, the private half not extractable, so a copied
// token is useless without this browser. account.js and console.js send
// every request with sessionsvcDPoP.fetch (one key, so one sign-in serves
// both). Without WebCrypto or IndexedDB a sign-in carries no proof, and the
// service answers with Bearer tokens, sent as they are.
var sessionsvcDPoP = (function () {
  "use strict";
  var KEY_DB = "sessionsvc-dpop", KEY_STORE = "keys", KEY_NAME = "account-page";
  var SKEW = "sessionsvc.clock_skew";
  var pageKey = null; // a promise of { pair, jwk }, or of null: no key can be kept here
  var clockSkew = Number(sessionStorage.getItem(SKEW)) || 0; // seconds the server's clock is ahead

  function b64url(bytes) {
    var text = "";
    new Uint8Array(bytes).forEach(function (b) { text += String.fromCharCode(b); });
    return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function utf8(text) { return new TextEncoder().encode(text); }

  function openKeys() {
    return new Promise(function (resolve, reject) {
      var request = indexedDB.open(KEY_DB, 1);
      request.onupgradeneeded = function () { request.result.createObjectStore(KEY_STORE); };
      request.onsuccess = function () { resolve(request.result); };
      request.onerror = function () { reject(request.error); };
    });
  }

  // The kept pair; or, when there is none, `made` kept now. One transaction
  // reads and writes, so two tabs making their first key agree on one.
  function keepFirst(db, made) {
    return new Promise(function (resolve, reject) {
      var tx = db.transaction(KEY_STORE, "readwrite");
      var keys = tx.objectStore(KEY_STORE);
      var kept = null;
      keys.get(KEY_NAME).onsuccess = function (event) {
        var found = event.target.result;
        kept = found && found.privateKey instanceof CryptoKey ? found : made;
        if (kept && kept === made) keys.put(made, KEY_NAME);
      };
      tx.oncomplete = function () { resolve(kept); };
      tx.onerror = tx.onabort = function () { reject(tx.error); };
    });
  }

  async function loadKey() {
    if (!window.isSecureContext || !crypto.subtle || !window.indexedDB) throw new Error("no WebCrypto or IndexedDB");
    var db = await openKeys();
    try {
      var pair = await keepFirst(db, null);
      if (!pair) {
        var made = await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, false, ["sign"]);
        pair = await keepFirst(db, { privateKey: made.privateKey, publicKey: made.publicKey });
      }
    } finally {
      db.close();
    }
    var jwk = await crypto.subtle.exportKey("jwk", pair.publicKey);
    return { pair: pair, jwk: { kty: jwk.kty, crv: jwk.crv, x: jwk.x, y: jwk.y } };
  }

  function key() {
    pageKey = pageKey || loadKey().catch(function () { pageKey = null; return null; });
    return pageKey;
  }

  // A proof for one request: htu is its absolute URL without query and
  // fragment; ath the hash of the token it presents, if any.
  async function proof(key, method, url, token) {
    var target = new URL(url, document.baseURI);
    target.search = "";
    target.hash = "";
    var claims = {
      jti: b64url(crypto.getRandomValues(new Uint8Array(16))),
      htm: method,
      htu: target.href,
      iat: Math.floor(Date.now() / 1000) + clockSkew,
    };
    if (token !== null) claims.ath = b64url(await crypto.subtle.digest("SHA-256", utf8(token)));
    var input = [{ typ: "dpop+jwt", alg: "ES256", jwk: key.jwk }, claims].map(function (part) {
      return b64url(utf8(JSON.stringify(part)));
    }).join(".");
    // WebCrypto's ECDSA signature is r || s, as JWS wants it.
    var signature = await crypto.subtle.sign({ name: "ECDSA", hash: "SHA-256" }, key.pair.privateKey, utf8(input));
    return input + "." + b64url(signature);
  }

  // A refused proof may only be dated by a wrong clock: follow the server's
  // (its Date header), and say whether that changed anything worth a retry.
  function followClock(response) {
    var skew = Math.round((Date.parse(response.headers.get("Date") || "") - Date.now()) / 1000);
    if (isNaN(skew) || Math.abs(skew - clockSkew) < 5) return false;
    clockSkew = skew;
    sessionStorage.setItem(SKEW, String(skew));
    return true;
  }

  function refusedProof(response) {
    if (response.status !== 400 && response.status !== 401) return false;
    return response.clone().json().then(function (p) { return p.code === "invalid_dpop_proof"; }, function () { return false; });
  }

  async function send(url, init, token, scheme, retried) {
    var headers = Object.assign({}, init.headers);
    if (token !== null && scheme !== "DPoP") {
      headers.Authorization = "Bearer " + token;
    } else {
      var pair = await key();
      if (pair) headers.DPoP = await proof(pair, init.method, url, token);
      if (token !== null) headers.Authorization = "DPoP " + token;
    }
    var r = await fetch(url, Object.assign({}, init, { headers: headers }));
    if (headers.DPoP && !retried && (await refusedProof(r)) && followClock(r)) return send(url, init, token, scheme, true);
    return r;
  }

  return Object.freeze({
    // fetch(url, init), presenting `token` (none: a sign-in) as `scheme` says:
    // "DPoP" with a proof of this request, else as Bearer. Sign-ins carry a
    // proof when a key can be kept. A proof refused for its date is sent once
    // more on the server's time.
    fetch: function (url, init, token, scheme) { return send(url, init, token || null, scheme, false); },
  });
})();
