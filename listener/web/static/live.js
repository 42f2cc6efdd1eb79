// Revenue ASI director dashboard: keeps each page live without reloading (no build step, no dependencies).
// 1. #feed[data-feed]: the latest events over server-sent events (GET /api/feed), newest on top.
// 2. #content[data-live=ms]: the page's content re-fetched as a fragment (X-Fragment: 1) every few seconds.
"use strict";
(function () {
  var MAX_ROWS = 60;
  var state = document.getElementById("live-state");

  function mark(on) {
    if (state) { state.className = "live " + (on ? "on" : "off"); }
  }

  function cell(row, text, cls, href) {
    var td = document.createElement("td");
    if (cls) { td.className = cls; }
    if (href) {
      var a = document.createElement("a");
      a.href = href;
      a.textContent = text;
      td.appendChild(a);
    } else {
      td.textContent = text == null ? "" : String(text);
    }
    row.appendChild(td);
  }

  function details(e) {
    var parts = [];
    ["error_code", "reason", "decision", "next_channel", "provider_status"].forEach(function (k) {
      if (e[k]) { parts.push(k + "=" + e[k]); }
    });
    return parts.join(" ");
  }

  function addEvent(tbody, e, fresh) {
    if (tbody.querySelector('tr[data-event-id="' + e.id + '"]')) { return; }  // backlog and live may overlap
    var row = document.createElement("tr");
    row.dataset.eventId = e.id;
    if (e.touch_run_id) { row.dataset.touch = e.touch_run_id; }
    if (fresh) { row.className = "new"; }
    cell(row, String(e.created_at || "").replace("T", " ").slice(0, 19));
    cell(row, e.event_type, "ev ev-" + e.event_type);
    cell(row, e.channel || "");
    cell(row, String(e.lead_id).slice(0, 8), "mono", "/leads/" + e.lead_id);
    if (e.touch_run_id) {
      cell(row, String(e.touch_run_id).slice(0, 8), "mono", "/touches/" + e.touch_run_id);
    } else {
      cell(row, "");
    }
    cell(row, details(e), "small");
    tbody.insertBefore(row, tbody.firstChild);
    while (tbody.rows.length > MAX_ROWS) { tbody.deleteRow(tbody.rows.length - 1); }
  }

  function startFeed(tbody) {
    var label = document.getElementById("feed-state");
    var source = new EventSource(tbody.dataset.feed);
    function onEvent(fresh) {
      return function (message) {
        try { addEvent(tbody, JSON.parse(message.data), fresh); } catch (err) { /* a malformed line is skipped */ }
      };
    }
    source.addEventListener("backlog", onEvent(false));
    source.addEventListener("event", onEvent(true));
    source.addEventListener("ready", function () {
      document.documentElement.dataset.feed = "open";
      if (label) { label.textContent = "live"; }
      mark(true);
    });
    source.onerror = function () {
      document.documentElement.dataset.feed = "reconnecting";
      if (label) { label.textContent = "reconnecting…"; }
      mark(false);
    };
  }

  function startRefresh(box) {
    var every = parseInt(box.dataset.live, 10) || 3000;
    var busy = false;
    setInterval(function () {
      if (busy || document.hidden) { return; }
      if (box.contains(document.activeElement) && document.activeElement !== document.body) { return; }
      if (box.querySelector("details[open]")) { return; }  // the reader is looking at something: do not move it
      busy = true;
      fetch(window.location.href, { headers: { "X-Fragment": "1" }, credentials: "same-origin" })
        .then(function (response) {
          if (!response.ok) { throw new Error(String(response.status)); }
          return response.text();
        })
        .then(function (html) { box.innerHTML = html; mark(true); })
        .catch(function () { mark(false); })
        .then(function () { busy = false; });
    }, every);
  }

  document.addEventListener("DOMContentLoaded", function () {
    var feed = document.getElementById("feed");
    if (feed && feed.dataset.feed && window.EventSource) { startFeed(feed); }
    var box = document.getElementById("content");
    if (box && box.dataset.live) { startRefresh(box); mark(true); }
  });
})();
