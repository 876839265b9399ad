// The pages' sign-in: their tokens, kept in sessionStorage under keys both
// pages use (one sign-in serves the account page and the admin console),
// presented as their type asks (dpop.js), and refreshed when they expire.
var sessionsvcTokens = (function () {
  "use strict";
  var ACCESS = "sessionsvc.access";
  var REFRESH = "sessionsvc.refresh";
  var TYPE = "sessionsvc.token_type"; // "DPoP": the tokens are bound to this browser's key (dpop.js)
  var AUTH = document.body.dataset.authUrl;
  var refreshing = null;

  function clear() {
    sessionStorage.removeItem(ACCESS);
    sessionStorage.removeItem(REFRESH);
    sessionStorage.removeItem(TYPE);
  }

  function store(tokens) {
    sessionStorage.setItem(ACCESS, tokens.access_token);
    sessionStorage.setItem(REFRESH, tokens.refresh_token);
    sessionStorage.setItem(TYPE, /^dpop$/i.test(tokens.token_type || "") ? "DPoP" : "Bearer");
  }

  // fetch, presenting `token` (null: none) as the tokens' type asks.
  function send(url, init, token) { return sessionsvcDPoP.fetch(url, init, token, sessionStorage.getItem(TYPE)); }

  // A response's problem document; {} when it has none.
  async function problem(response) {
    try { return await response.json(); } catch (e) { return {}; }
  }

  function refresh() {
    // One refresh at a time: a refresh token is good for one use only.
    refreshing = refreshing || send(AUTH + "/refresh", { method: "POST" }, sessionStorage.getItem(REFRESH)).then(async function (r) {
      if (!r.ok) return false;
      store(await r.json());
      return true;
    }).catch(function () { return false; }).finally(function () { refreshing = null; });
    return refreshing;
  }

  // A call with the access token and a JSON body, if any: its response, once
  // more after a refresh when the token had expired (token_expired).
  async function call(method, url, body, retried) {
    var options = { method: method, headers: {} };
    if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    var r = await send(url, options, sessionStorage.getItem(ACCESS));
    if (r.status === 401 && !retried && (await problem(r.clone())).code === "token_expired" && (await refresh())) {
      return call(method, url, body, true);
    }
    return r;
  }

  // Sign in and keep the tokens: null, or what to tell the person.
  async function signIn(username, password) {
    var r = await send(AUTH + "/login", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ username: username, password: password }),
    }, null).catch(function () { return null; });
    if (r && r.ok) {
      store(await r.json());
      return null;
    }
    var p = r ? await problem(r) : {};
    return r && r.status === 401 ? "Wrong username or password." : p.detail || "Could not sign in. Try again.";
  }

  // The pages' sign-in form (templates/sessionsvc_pages/signin.html): on
  // submit, sign in; say why not in #signin-error, or call `done`.
  function form(done) {
    var $ = function (id) { return document.getElementById(id); };
    $("signin").addEventListener("submit", async function (event) {
      event.preventDefault();
      $("signin-error").textContent = "";
      var refused = await signIn($("username").value, $("password").value);
      if (refused) {
        $("signin-error").textContent = refused;
        return;
      }
      $("password").value = "";
      done();
    });
  }

  // Who the access token is for (its `sub` claim), or "" when there is none.
  function subject() {
    try {
      var part = (sessionStorage.getItem(ACCESS) || "").split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      var bytes = Uint8Array.from(atob(part), function (c) { return c.charCodeAt(0); });
      return JSON.parse(new TextDecoder().decode(bytes)).sub || "";
    } catch (e) {
      return "";
    }
  }

  return Object.freeze({
    clear: clear, problem: problem, call: call, form: form, subject: subject,
    signedIn: function () { return sessionStorage.getItem(ACCESS) !== null; },
    logout: function () { return call("POST", AUTH + "/logout"); },
  });
})();
