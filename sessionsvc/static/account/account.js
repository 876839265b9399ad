// "Where you're signed in": sign in, list this user's sessions, sign them out.
(function () {
  "use strict";
  var ACCESS = "sessionsvc.access";
  var REFRESH = "sessionsvc.refresh";
  var TYPE = "sessionsvc.token_type";
  var SKEW = "sessionsvc.clock_skew";
  var SESSIONS = document.body.dataset.sessionsUrl;
  var AUTH = document.body.dataset.authUrl;
  var RISKS = { new_device: "New device", new_country: "New country", anomaly: "Unusual activity", impossible_travel: "Impossible travel" };
  var REASONS = {
    user: "signed out from another device", logout: "signed out", others: "signed out with the others",
    admin: "signed out by an administrator", evicted: "too many sessions", refresh_reuse: "a stolen refresh token",
    anomaly: "unusual activity", idle: "unused too long", password_changed: "password changed",
    user_disabled: "account disabled", user_deleted: "account deleted", roles_changed: "roles changed",
  };
  var SVG = "http://www.w3.org/2000/svg";
  // One outline per device type: [tag, attributes] pairs on a 24x24 box.
  var ICONS = {
    desktop: [["rect", { x: 2, y: 4, width: 20, height: 13, rx: 1 }], ["path", { d: "M8 21h8M12 17v4" }]],
    mobile: [["rect", { x: 7, y: 2, width: 10, height: 20, rx: 2 }], ["path", { d: "M11 18h2" }]],
    tablet: [["rect", { x: 4, y: 2, width: 16, height: 20, rx: 2 }], ["path", { d: "M11 18h2" }]],
    bot: [["rect", { x: 4, y: 8, width: 16, height: 12, rx: 2 }], ["path", { d: "M12 8V4M9 13h.01M15 13h.01" }]],
    other: [["circle", { cx: 12, cy: 12, r: 9 }], ["path", { d: "M9.5 9.5a2.5 2.5 0 1 1 3.5 2.3c-.6.3-1 .8-1 1.5v.7M12 17h.01" }]],
  };
  var $ = function (id) { return document.getElementById(id); };
  var lastSessions = [];
  var refreshing = null;

  function SignedOut() {}

  // DPoP (RFC 9449): the page binds its tokens to a key pair it makes once and
  // keeps in IndexedDB, its private half not extractable, so a copied token is
  // useless without this browser. Without WebCrypto or IndexedDB, or when the
  // server does not bind, the page signs in with Bearer tokens.
  var KEY_DB = "sessionsvc-dpop", KEY_STORE = "keys", KEY_NAME = "account-page";
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

  function dpopKey() {
    pageKey = pageKey || loadKey().catch(function () { pageKey = null; return null; });
    return pageKey;
  }

  // A proof for one request: htu is its absolute URL without query and fragment.
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
    if (token) claims.ath = b64url(await crypto.subtle.digest("SHA-256", utf8(token)));
    var input = [{ typ: "dpop+jwt", alg: "ES256", jwk: key.jwk }, claims].map(function (part) {
      return b64url(utf8(JSON.stringify(part)));
    }).join(".");
    // WebCrypto's ECDSA signature is r || s, as JWS wants it.
    var signature = await crypto.subtle.sign({ name: "ECDSA", hash: "SHA-256" }, key.pair.privateKey, utf8(input));
    return input + "." + b64url(signature);
  }

  // The headers that present `token` (null: signing in) for one request.
  async function authorize(method, url, token) {
    if (token !== null && sessionStorage.getItem(TYPE) !== "DPoP") return { Authorization: "Bearer " + token };
    var headers = {};
    var key = await dpopKey();
    if (key) headers.DPoP = await proof(key, method, url, token);
    if (token !== null) headers.Authorization = "DPoP " + token;
    return headers;
  }

  // A refused proof may only be dated by a wrong clock: follow the server's
  // (its Date header), and say whether that changed anything worth a retry.
  function followClock(response) {
    var date = Date.parse(response.headers.get("Date") || "");
    var skew = Math.round((date - Date.now()) / 1000);
    if (isNaN(skew) || Math.abs(skew - clockSkew) < 5) return false;
    clockSkew = skew;
    sessionStorage.setItem(SKEW, String(skew));
    return true;
  }

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function icon(type) {
    var span = el("span", { class: "device-icon", "aria-hidden": "true", "data-device-type": type });
    var svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    (ICONS[type] || ICONS.other).forEach(function (part) {
      var shape = document.createElementNS(SVG, part[0]);
      Object.keys(part[1]).forEach(function (k) { shape.setAttribute(k, part[1][k]); });
      svg.appendChild(shape);
    });
    span.appendChild(svg);
    return span;
  }

  function status(text) { $("status").textContent = text; }

  function showSignin(message) {
    sessionStorage.removeItem(ACCESS);
    sessionStorage.removeItem(REFRESH);
    sessionStorage.removeItem(TYPE);
    sessionStorage.removeItem(SKEW);
    $("session-list").replaceChildren();
    $("account").hidden = true;
    $("signin").hidden = false;
    $("signin-error").textContent = message || "";
    $("username").focus();
  }

  function store(tokens) {
    sessionStorage.setItem(ACCESS, tokens.access_token);
    sessionStorage.setItem(REFRESH, tokens.refresh_token);
    sessionStorage.setItem(TYPE, /^dpop$/i.test(tokens.token_type || "") ? "DPoP" : "Bearer");
  }

  async function problem(response) {
    try { return await response.json(); } catch (e) { return {}; }
  }

  function refresh() {
    // One refresh at a time: a refresh token is good for one use only.
    var url = AUTH + "/refresh";
    refreshing = refreshing || authorize("POST", url, sessionStorage.getItem(REFRESH)).then(function (headers) {
      return fetch(url, { method: "POST", headers: headers });
    }).then(async function (r) {
      if (!r.ok) return false;
      store(await r.json());
      return true;
    }).catch(function () { return false; }).finally(function () { refreshing = null; });
    return refreshing;
  }

  async function api(method, url, body, retried) {
    var options = { method: method, headers: await authorize(method, url, sessionStorage.getItem(ACCESS)) };
    if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    var r = await fetch(url, options);
    if (r.status === 401) {
      var p = await problem(r);
      if (p.code === "token_expired" && !retried && (await refresh())) return api(method, url, body, true);
      if (p.code === "invalid_dpop_proof" && !retried && followClock(r)) return api(method, url, body, true);
      // A wrong current password is a wrong password, not a signed-out session.
      if (p.code === "invalid_credentials") throw new Error("That is not your current password.");
      showSignin("You were signed out.");
      throw new SignedOut();
    }
    if (!r.ok) {
      var err = await problem(r);
      throw new Error(err.detail || err.title || "Request failed (" + r.status + ").");
    }
    return r.status === 204 ? null : r.json();
  }

  function label(s) { return s.name || (s.device && s.device.label) || "Unknown device"; }

  function detail(d) {
    var browser = [d.browser, d.browser_version].filter(Boolean).join(" ");
    var os = [d.os, d.os_version].filter(Boolean).join(" ");
    return [browser || "Unknown browser", os || "unknown system"].join(" on ");
  }

  function place(loc) {
    if (!loc || !loc.country) return "Unknown location";
    return loc.city ? loc.city + ", " + loc.country : loc.country;
  }

  function ago(timestamp) {
    var minutes = Math.floor((Date.now() - Date.parse(timestamp)) / 60000);
    if (!(minutes >= 2)) return "Active now";
    var unit = minutes < 60 ? [minutes, "minute"] : minutes < 1440 ? [Math.floor(minutes / 60), "hour"] : [Math.floor(minutes / 1440), "day"];
    return unit[0] + " " + unit[1] + (unit[0] === 1 ? "" : "s") + " ago";
  }

  function card(s) {
    var name = label(s);
    var li = el("li", { class: "session-card", "data-session-id": s.id });
    var heading = el("h2", { class: "device-label" }, name);
    li.append(icon((s.device && s.device.type) || "other"), heading);
    if (s.current) li.appendChild(el("span", { class: "badge-current" }, "This device"));
    (s.risk || []).forEach(function (flag) { li.appendChild(el("span", { class: "risk", "data-risk": flag }, RISKS[flag] || flag)); });
    li.append(
      el("p", { class: "device-detail" }, detail(s.device || {})),
      el("p", { class: "location" }, place(s.location) + (s.ip ? " · " + s.ip : "")),
      el("p", { class: "activity" }, ago(s.last_seen_at))
    );
    var rename = el("button", { class: "rename", type: "button", "aria-label": "Rename " + name }, "Rename");
    var signout = el("button", { class: "signout", type: "button", "aria-label": "Sign out " + name }, "Sign out");
    rename.addEventListener("click", function () { renameForm(s, heading); });
    signout.addEventListener("click", function () { act(function () { return signOut(s, name); }); });
    var actions = el("div", { class: "actions" });
    actions.append(rename, signout);
    li.appendChild(actions);
    return li;
  }

  function renameForm(s, heading) {
    var form = el("form", { class: "rename-form" });
    var id = "rename-" + s.id;
    var input = el("input", { id: id, name: "name", maxlength: "64", autocomplete: "off" });
    input.value = s.name || "";
    var cancel = el("button", { type: "button", class: "cancel" }, "Cancel");
    form.append(el("label", { for: id }, "Name for this device"), input, el("button", { type: "submit" }, "Save"), cancel);
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var value = input.value.trim();
      act(async function () {
        await api("PATCH", SESSIONS + "/" + encodeURIComponent(s.id), { name: value || null });
        status(value ? "Renamed to " + value + "." : "Name cleared.");
      }, s.id);
    });
    cancel.addEventListener("click", function () { render(lastSessions, s.id); });
    heading.replaceWith(form);
    input.focus();
  }

  async function signOut(s, name) {
    if (s.current) {
      await api("POST", AUTH + "/logout");
      showSignin("");
      status("You signed out of this device.");
      throw new SignedOut();
    }
    await api("DELETE", SESSIONS + "/" + encodeURIComponent(s.id));
    status("Signed out " + name + ".");
  }

  function render(sessions, focusId) {
    lastSessions = sessions;
    var list = $("session-list");
    list.replaceChildren.apply(list, sessions.map(card));
    $("signin").hidden = true;
    $("account").hidden = false;
    var back = focusId && list.querySelector('[data-session-id="' + CSS.escape(focusId) + '"] .rename');
    if (back) back.focus();
  }

  function changes(d) {
    return ["browser", "os", "country"].filter(function (k) { return d[k]; }).map(function (k) {
      return k + " " + (d[k].from || "?") + " → " + (d[k].to || "?");
    }).join(", ");
  }

  // One line of "Recent security activity": what happened, from where.
  function happening(e) {
    var d = e.detail || {};
    switch (e.type) {
      case "session.created":
        return "New sign-in" + (d.risk && d.risk.length ? " (" + d.risk.map(function (f) { return RISKS[f] || f; }).join(", ") + ")" : "");
      case "session.revoked":
        return "Signed out: " + (REASONS[d.reason] || d.reason || "revoked");
      case "session.anomaly":
        if (d.kind === "impossible_travel") {
          return "Impossible travel: " + place(d.location.from) + " to " + place(d.location.to) + ", " +
            d.distance_km.toLocaleString("en") + " km at " + d.speed_kmh.toLocaleString("en") + " km/h";
        }
        if (d.kind === "dpop_mismatch") return "Unusual activity: this session's token was used without this device's key";
        return "Unusual activity: " + changes(d);
      case "session.ip_changed":
        return "New address: " + (d.to || "?");
      case "password.changed":
        return "Password changed; " + d.revoked + " other session" + (d.revoked === 1 ? "" : "s") + " signed out";
      default:
        return e.type;
    }
  }

  function activityItem(e) {
    var li = el("li", { class: "event", "data-event-type": e.type });
    li.append(
      el("p", { class: "what" }, happening(e)),
      el("p", { class: "when" }, ago(e.at).replace("Active now", "Just now") + (e.ip ? " · " + e.ip : ""))
    );
    return li;
  }

  async function load(focusId) {
    var data = await api("GET", SESSIONS);
    var history = await api("GET", SESSIONS + "/events?limit=20");
    render(data.sessions, focusId);
    var list = $("activity-list");
    list.replaceChildren.apply(list, history.events.map(activityItem));
  }

  // Run an action, then reload the list from the API; errors go to #status.
  async function act(action, focusId) {
    try {
      await action();
      await load(focusId);
    } catch (e) {
      if (e instanceof SignedOut) return;
      status(e.message);
      await load(focusId).catch(function () {});
    }
  }

  async function signIn(retried) {
    var url = AUTH + "/login";
    var headers = await authorize("POST", url, null).catch(function () { return {}; });
    headers["Content-Type"] = "application/json";
    var r = await fetch(url, {
      method: "POST",
      headers: headers,
      body: JSON.stringify({ username: $("username").value, password: $("password").value }),
    }).catch(function () { return null; });
    if (r && r.status === 400 && !retried && (await problem(r.clone())).code === "invalid_dpop_proof" && followClock(r)) {
      return signIn(true);
    }
    return r;
  }

  $("signin").addEventListener("submit", async function (event) {
    event.preventDefault();
    $("signin-error").textContent = "";
    var r = await signIn(false);
    if (!r || !r.ok) {
      var p = r ? await problem(r) : {};
      $("signin-error").textContent = r && r.status === 401 ? "Wrong username or password." : p.detail || "Could not sign in. Try again.";
      return;
    }
    store(await r.json());
    $("password").value = "";
    status("");
    act(function () {});
  });

  $("signout-others").addEventListener("click", function () {
    act(async function () {
      var result = await api("DELETE", SESSIONS);
      status("Signed out of " + result.revoked + " other session" + (result.revoked === 1 ? "" : "s") + ".");
    });
  });

  $("password-form").addEventListener("submit", async function (event) {
    event.preventDefault();
    $("password-error").textContent = "";
    try {
      var result = await api("POST", AUTH + "/password", {
        current_password: $("current-password").value,
        new_password: $("new-password").value,
      });
      $("current-password").value = "";
      $("new-password").value = "";
      await load();
      status("Password changed. Signed out of " + result.revoked + " other session" + (result.revoked === 1 ? "" : "s") + ".");
    } catch (e) {
      if (!(e instanceof SignedOut)) $("password-error").textContent = e.message;
    }
  });

  if (sessionStorage.getItem(ACCESS)) act(function () {});
  else showSignin("");
})();
