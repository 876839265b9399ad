// What the pages call things, in words a person uses: devices, places,
// times and security events. No DOM and no requests: account.js and
// console.js build their pages from these.
var sessionsvcDescribe = (function () {
  "use strict";
  var RISKS = { new_device: "New device", new_country: "New country", anomaly: "Unusual activity", impossible_travel: "Impossible travel" };
  var REASONS = {
    user: "signed out from another device", logout: "signed out", others: "signed out with the others",
    admin: "signed out by an administrator", evicted: "too many sessions", refresh_reuse: "a stolen refresh token",
    anomaly: "unusual activity", idle: "unused too long", password_changed: "password changed",
    user_disabled: "account disabled", user_deleted: "account deleted", roles_changed: "roles changed",
    denied: "you said it was not you",
  };
  // The same words told to an administrator, about the user ("them", not "you").
  var ABOUT_USER = { denied: "the user said it was not them", confirmed: "Sign-in confirmed by the user" };

  function count(n, unit) { return n + " " + unit + (n === 1 ? "" : "s"); }

  // A card's title: the user's own name for the session, else its device label.
  function label(s) { return s.name || (s.device && s.device.label) || "Unknown device"; }

  // "Mobile Safari on iOS": the names a person knows the device by, no versions.
  function device(d) { return [d.browser, d.os].filter(Boolean).join(" on ") || d.label || "An unknown device"; }

  function place(loc) {
    if (!loc || !loc.country) return "Unknown location";
    return loc.city ? loc.city + ", " + loc.country : loc.country;
  }

  // "5 minutes ago"; `recent` under two minutes.
  function ago(timestamp, recent) {
    var minutes = Math.floor((Date.now() - Date.parse(timestamp)) / 60000);
    if (!(minutes >= 2)) return recent;
    if (minutes < 60) return count(minutes, "minute") + " ago";
    return (minutes < 1440 ? count(Math.floor(minutes / 60), "hour") : count(Math.floor(minutes / 1440), "day")) + " ago";
  }

  // "1 second", "25 minutes", "3 hours 10 minutes".
  function duration(seconds) {
    if (seconds < 59.5) return count(Math.max(1, Math.round(seconds)), "second");
    var minutes = Math.round(seconds / 60);
    if (minutes < 60) return count(minutes, "minute");
    var rest = minutes % 60;
    return count(Math.floor(minutes / 60), "hour") + (rest ? " " + count(rest, "minute") : "");
  }

  // "16,095 km in 1 second": the distance and the time between the two
  // sightings (the service gives the speed; distance / speed is the time).
  function travel(d) {
    var distance = d.distance_km.toLocaleString("en") + " km";
    return d.speed_kmh > 0 ? distance + " in " + duration((d.distance_km / d.speed_kmh) * 3600) : distance;
  }

  function changes(d) {
    return ["browser", "os", "country"].filter(function (k) { return d[k]; }).map(function (k) {
      return k + " " + (d[k].from || "?") + " → " + (d[k].to || "?");
    }).join(", ");
  }

  // One line of "Recent security activity": what happened; `aboutUser`:
  // told to an administrator, not to the user.
  function happening(e, aboutUser) {
    var d = e.detail || {};
    switch (e.type) {
      case "session.created":
        return "New sign-in" + (d.risk && d.risk.length ? " (" + d.risk.map(function (f) { return RISKS[f] || f; }).join(", ") + ")" : "");
      case "session.confirmed":
        return aboutUser ? ABOUT_USER.confirmed : "Sign-in confirmed as yours";
      case "session.revoked":
        return "Signed out: " + ((aboutUser && ABOUT_USER[d.reason]) || REASONS[d.reason] || d.reason || "revoked");
      case "session.anomaly":
        if (d.kind === "impossible_travel") {
          return "Impossible travel: " + place(d.location.from) + " to " + place(d.location.to) + ", " + travel(d);
        }
        if (d.kind === "dpop_mismatch") return "Unusual activity: this session's token was used without this device's key";
        return "Unusual activity: " + changes(d);
      case "session.ip_changed":
        return "New address: " + (d.to || "?");
      case "password.changed":
        return "Password changed; " + count(d.revoked, "other session") + " signed out";
      default:
        return e.type;
    }
  }

  return { RISKS: RISKS, count: count, label: label, device: device, place: place, ago: ago, duration: duration, travel: travel, happening: happening };
})();
