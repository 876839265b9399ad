// "Where you're signed in": sign in, list this user's sessions, answer "Was
// this you?" for new sign-ins, sign sessions out.
(function () {
  "use strict";
  var SESSIONS = document.body.dataset.sessionsUrl;
  var AUTH = document.body.dataset.authUrl;
  var T = sessionsvcTokens; // tokens.js: sign-in, the tokens, refresh
  var D = sessionsvcDescribe; // describe.js: the words for devices, places, times, events
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
    T.clear();
    $("session-list").replaceChildren();
    $("account").hidden = true;
    $("signin").hidden = false;
    $("signin-error").textContent = message || "";
    $("username").focus();
  }

  // A call of the API (tokens.js refreshes an expired token): its JSON, or
  // null; a refusal throws its detail, a signed-out session SignedOut.
  async function api(method, url, body) {
    var r = await T.call(method, url, body);
    if (r.status === 401) {
      var p = await T.problem(r);
      // A wrong current password is a wrong password, not a signed-out session.
      if (p.code === "invalid_credentials") throw new Error("That is not your current password.");
      showSignin("You were signed out.");
      throw new SignedOut();
    }
    if (!r.ok) {
      var err = await T.problem(r);
      throw new Error(err.detail || err.title || "Request failed (" + r.status + ").");
    }
    return r.status === 204 ? null : r.json();
  }

  function card(s) {
    var name = D.label(s);
    var li = el("li", { class: "session-card", "data-session-id": s.id });
    var heading = el("h2", { class: "device-label" }, name);
    var badges = el("p", { class: "badges" });
    if (s.current) badges.appendChild(el("span", { class: "badge-current" }, "This device"));
    if (s.review === "confirmed") badges.appendChild(el("span", { class: "badge-confirmed" }, "Confirmed by you"));
    (s.risk || []).forEach(function (flag) { badges.appendChild(el("span", { class: "risk", "data-risk": flag }, D.RISKS[flag] || flag)); });
    li.append(icon((s.device && s.device.type) || "other"), heading);
    if (badges.childElementCount) li.appendChild(badges);
    // Under a name of the user's own, what the device is; else the title says it.
    if (s.name) li.appendChild(el("p", { class: "device-detail" }, (s.device && s.device.label) || "Unknown device"));
    li.append(
      el("p", { class: "location" }, D.place(s.location) + (s.ip ? " · " + s.ip : "")),
      el("p", { class: "activity" }, D.ago(s.last_seen_at, "Active now"))
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

  // "Was this you?": a pending sign-in of another device, answered here.
  function prompt(s) {
    var who = D.device(s.device || {});
    var url = SESSIONS + "/" + encodeURIComponent(s.id);
    var li = el("li", { class: "review-prompt", "data-session-id": s.id });
    var question = el("p", { class: "question", id: "review-" + s.id },
      "New sign-in: " + [who, s.location && s.location.city, D.ago(s.created_at, "just now")].filter(Boolean).join(", ") + " — was this you?");
    var yes = el("button", { class: "confirm", type: "button", "aria-describedby": question.id }, "Yes, it was me");
    var no = el("button", { class: "deny", type: "button", "aria-describedby": question.id }, "No, secure my account");
    yes.addEventListener("click", function () {
      act(async function () { await api("POST", url + "/confirm"); status(who + " is confirmed as yours."); }, s.id);
    });
    no.addEventListener("click", async function () {
      var denied = await act(async function () {
        var result = await api("POST", url + "/deny");
        status("Signed out " + D.count(result.revoked, "session") + " you did not recognise. Change your password now, in case someone else knows it.");
      });
      if (denied) $("current-password").focus(); // the change-password form, in view
    });
    var actions = el("div", { class: "actions" });
    actions.append(yes, no);
    li.append(question, actions);
    return li;
  }

  // Pending sessions first, asked of a device that may answer: neither the
  // pending one itself nor any device while its own session is pending.
  function review(sessions) {
    var self = sessions.filter(function (s) { return s.current; })[0] || {};
    var pending = self.review === "pending" ? [] : sessions.filter(function (s) { return s.review === "pending" && !s.current; });
    var list = $("review-list");
    list.replaceChildren.apply(list, pending.map(prompt));
    $("review").hidden = !pending.length;
    $("review-self").hidden = self.review !== "pending";
  }

  function render(sessions, focusId) {
    lastSessions = sessions;
    var list = $("session-list");
    list.replaceChildren.apply(list, sessions.map(card));
    review(sessions);
    $("signin").hidden = true;
    $("account").hidden = false;
    var back = focusId && list.querySelector('[data-session-id="' + CSS.escape(focusId) + '"] .rename');
    if (back) back.focus();
  }

  function activityItem(e) {
    var li = el("li", { class: "event", "data-event-type": e.type });
    li.append(
      el("p", { class: "what" }, D.happening(e)),
      el("p", { class: "when" }, D.ago(e.at, "Just now") + (e.ip ? " · " + e.ip : ""))
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
  // True when the action was done.
  async function act(action, focusId) {
    try {
      await action();
      await load(focusId);
      return true;
    } catch (e) {
      if (e instanceof SignedOut) return false;
      status(e.message);
      await load(focusId).catch(function () {});
      return false;
    }
  }

  T.form(function () {
    status("");
    act(function () {});
  });

  $("signout-others").addEventListener("click", function () {
    act(async function () {
      var result = await api("DELETE", SESSIONS);
      status("Signed out of " + D.count(result.revoked, "other session") + ".");
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
      status("Password changed. Signed out of " + D.count(result.revoked, "other session") + ".");
    } catch (e) {
      if (!(e instanceof SignedOut)) $("password-error").textContent = e.message;
    }
  });

  if (T.signedIn()) act(function () {});
  else showSignin("");
})();
