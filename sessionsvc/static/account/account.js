// "Where you're signed in": sign in, list this user's sessions, sign them out.
(function () {
  "use strict";
  var ACCESS = "sessionsvc.access";
  var REFRESH = "sessionsvc.refresh";
  var TYPE = "sessionsvc.token_type"; // "DPoP": the tokens are bound to this browser's key (dpop.js)
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

  // fetch, presenting `token` (null: none) as the tokens' type asks.
  function send(url, init, token) { return sessionsvcDPoP.fetch(url, init, token, sessionStorage.getItem(TYPE)); }

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

  async function api(method, url, body, retried) {
    var options = { method: method, headers: {} };
    if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    var r = await send(url, options, sessionStorage.getItem(ACCESS));
    if (r.status === 401) {
      var p = await problem(r);
      if (p.code === "token_expired" && !retried && (await refresh())) return api(method, url, body, true);
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

  $("signin").addEventListener("submit", async function (event) {
    event.preventDefault();
    $("signin-error").textContent = "";
    var r = await send(AUTH + "/login", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ username: $("username").value, password: $("password").value }),
    }, null).catch(function () { return null; });
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
