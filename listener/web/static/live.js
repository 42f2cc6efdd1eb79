// Revenue ASI director dashboard: keeps each page live without reloading (no build step, no dependencies).
// 1. #feed[data-feed]: the latest events over server-sent events (GET /api/feed), newest on top.
// 2. #content[data-live=ms]: the page's content re-fetched as a fragment (X-Fragment: 1) every few seconds.
// 3. #command-form: the console (SPEC §18). The text is POSTed as JSON to /api/command-os (the session cookie
//    goes along: same origin); the answer is drawn in #command-out — a read's result as tables, a write's preview
//    with a Confirm button that posts {"intent", "args", "confirm": true}, an error with its reason (and for a 422
//    the intents and example phrasings, each a button that fills the box). Built with DOM calls and textContent
//    only: nothing the server or the user typed is ever parsed as HTML.
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


  // ---- the console -------------------------------------------------------------------------------------------
  var UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
  var LINKS = { lead_id: "/leads/", touch_id: "/touches/", touch_run_id: "/touches/", campaign_id: "/touches?campaign=" };
  var MAX_TABLE_ROWS = 50;
  var MAX_COLUMNS = 12;

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) { node.className = cls; }
    if (text != null) { node.textContent = String(text); }
    return node;
  }

  function isObject(v) { return v !== null && typeof v === "object" && !Array.isArray(v); }

  function scalar(v) {
    if (v === null || v === undefined) { return "—"; }
    if (typeof v === "boolean") { return v ? "yes" : "no"; }
    if (typeof v === "number" && !Number.isInteger(v)) { return String(Math.round(v * 10000) / 10000); }
    return String(v);
  }

  function compact(v) {
    var s = JSON.stringify(v);
    return s && s.length > 160 ? s.slice(0, 157) + "…" : (s || "");
  }

  function valueNode(key, v) {  // a scalar, linked when it is an id the dashboard has a page for
    if (typeof v === "string" && LINKS[key] && UUID.test(v)) {
      var a = el("a", "mono", v.slice(0, 8));
      a.href = LINKS[key] + encodeURIComponent(v);
      a.title = v;
      return a;
    }
    return document.createTextNode(scalar(v));
  }

  function rowsTable(rows, depth) {
    var columns = [];
    rows.slice(0, MAX_TABLE_ROWS).forEach(function (r) {
      Object.keys(r).forEach(function (k) { if (columns.indexOf(k) < 0 && columns.length < MAX_COLUMNS) { columns.push(k); } });
    });
    var table = el("table", "cmd-rows");
    var head = table.createTHead().insertRow();
    columns.forEach(function (k) { head.appendChild(el("th", null, k)); });
    var body = table.createTBody();
    rows.slice(0, MAX_TABLE_ROWS).forEach(function (r) {
      var tr = body.insertRow();
      columns.forEach(function (k) {
        var td = tr.insertCell();
        var v = r[k];
        td.appendChild(v !== null && typeof v === "object" ? (depth < 2 && isObject(v) ? render(v, depth + 1)
                                                                                       : el("span", "mono small", compact(v)))
                                                           : valueNode(k, v));
      });
    });
    if (rows.length > MAX_TABLE_ROWS) {
      var more = body.insertRow().insertCell();
      more.colSpan = columns.length;
      more.className = "dim";
      more.textContent = "… " + (rows.length - MAX_TABLE_ROWS) + " more (see JSON)";
    }
    return table;
  }

  function render(v, depth) {
    if (Array.isArray(v)) {
      if (v.length === 0) { return el("span", "dim", "none"); }
      if (v.every(isObject)) { return rowsTable(v, depth); }
      if (v.every(function (x) { return x === null || typeof x !== "object"; })) {
        return el("span", null, v.map(scalar).join(", "));
      }
      return el("span", "mono small", compact(v));
    }
    if (isObject(v)) {
      var keys = Object.keys(v);
      if (keys.length === 0) { return el("span", "dim", "—"); }
      if (depth >= 3) { return el("span", "mono small", compact(v)); }
      if (depth >= 2 && keys.every(function (k) { return v[k] === null || typeof v[k] !== "object"; })) {
        var line = el("span", "cmd-pairs");  // a nested object of plain values: one line, "key value · key value"
        keys.forEach(function (k, i) {
          if (i) { line.appendChild(document.createTextNode(" · ")); }
          line.appendChild(el("span", "dim", k + " "));
          line.appendChild(valueNode(k, v[k]));
        });
        return line;
      }
      var table = el("table", "kv cmd-kv");
      var body = table.createTBody();
      keys.forEach(function (k) {
        var tr = body.insertRow();
        tr.dataset.key = k;
        tr.appendChild(el("th", null, k));
        var td = tr.insertCell();
        td.appendChild(v[k] !== null && typeof v[k] === "object" ? render(v[k], depth + 1) : valueNode(k, v[k]));
      });
      return table;
    }
    return document.createTextNode(scalar(v));
  }

  function rawJson(answer) {
    var details = el("details", "cmd-json");
    details.appendChild(el("summary", "dim small", "JSON"));
    details.appendChild(el("pre", "json", JSON.stringify(answer, null, 2)));
    return details;
  }

  function postCommand(body) {
    return fetch("/api/command-os", {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "Accept": "application/json" },
      body: JSON.stringify(body)
    }).then(function (response) {
      return response.text().then(function (text) {
        var data = null;
        try { data = JSON.parse(text); } catch (err) { data = null; }
        return { status: response.status, data: data, text: text };
      });
    });
  }

  function startConsole(form) {
    var input = document.getElementById("command-text");
    var out = document.getElementById("command-out");
    var button = form.querySelector("button[type=submit]");

    function reset(state) {
      out.textContent = "";
      out.hidden = false;
      out.dataset.state = state;
      delete out.dataset.intent;
      delete out.dataset.status;
      var close = el("button", "cmd-close", "×");
      close.type = "button";
      close.title = "close";
      close.addEventListener("click", function () { out.hidden = true; out.textContent = ""; out.dataset.state = ""; });
      out.appendChild(close);
    }

    function heading(text, cls) {
      var h = el("h3", cls, text);
      out.appendChild(h);
      return h;
    }

    function argsLine(answer) {
      var p = el("p", "cmd-intent");
      p.appendChild(el("code", null, answer.intent));
      var args = answer.args || {};
      Object.keys(args).forEach(function (k) {
        p.appendChild(document.createTextNode(" " + k + "="));
        p.appendChild(valueNode(k, args[k]));
      });
      out.appendChild(p);
    }

    function showError(status, data, text) {
      reset("error");
      out.dataset.status = String(status);
      var message = data && typeof data.error === "string" ? data.error : (text || "").slice(0, 300);
      if (status === 401) { message = "signed out: reload the page to sign in again"; }
      heading(status ? "Not done (" + status + ")" : "Not done", "bad");
      out.appendChild(el("p", "cmd-error bad", message || "the server gave no reason"));
      if (data && isObject(data)) {
        var extra = {};
        Object.keys(data).forEach(function (k) {
          if (["error", "known_intents", "examples"].indexOf(k) < 0) { extra[k] = data[k]; }
        });
        if (Object.keys(extra).length) { out.appendChild(render(extra, 1)); }  // e.g. 409's candidates
        if (Array.isArray(data.known_intents)) {
          out.appendChild(el("p", "dim small", "Known intents: " + data.known_intents.join(", ")));
        }
        if (isObject(data.examples)) {
          var list = el("ul", "cmd-examples");
          Object.keys(data.examples).forEach(function (intent) {
            var li = el("li");
            li.appendChild(el("code", null, intent));
            (Array.isArray(data.examples[intent]) ? data.examples[intent] : []).forEach(function (phrase) {
              var b = el("button", "example", String(phrase));
              b.type = "button";
              b.addEventListener("click", function () { input.value = String(phrase); input.focus(); });
              li.appendChild(document.createTextNode(" "));
              li.appendChild(b);
            });
            list.appendChild(li);
          });
          out.appendChild(list);
        }
      }
    }

    function showAnswer(answer, confirmed, typed) {
      if (answer.confirm_required) {
        reset("preview");
        out.dataset.intent = answer.intent;
        heading("Preview — nothing has changed yet", "warn");
        argsLine(answer);
        if (answer.resolved_by === "model") {
          out.appendChild(el("p", "warn small", "The model chose this command from your words: check it before you confirm."));
        }
        out.appendChild(render(answer.preview, 1));
        var actions = el("p", "cmd-actions");
        var confirm = el("button", "confirm", "Confirm");
        confirm.type = "button";
        confirm.id = "command-confirm";
        var cancel = el("button", "secondary", "Cancel");
        cancel.type = "button";
        cancel.addEventListener("click", function () { out.hidden = true; out.textContent = ""; out.dataset.state = ""; });
        confirm.addEventListener("click", function () {
          confirm.disabled = cancel.disabled = true;
          confirm.textContent = "Running…";
          var body = { intent: answer.intent, args: answer.args || {}, confirm: true };
          if (typed) { body.text = typed; }  // recorded in command_runs as what was typed, not resolved again
          run(body, true);
        });
        actions.appendChild(confirm);
        actions.appendChild(document.createTextNode(" "));
        actions.appendChild(cancel);
        out.appendChild(actions);
      } else {
        reset(confirmed ? "done" : "result");
        out.dataset.intent = answer.intent;
        heading(confirmed ? "Done" : "Answer", confirmed ? "good" : null);
        argsLine(answer);
        out.appendChild(render(answer.result, 1));
        if (answer.command_run_id) {
          var recorded = el("p", "dim small", "Recorded in ");
          var link = el("a", null, "/commands");
          link.href = "/commands";
          recorded.appendChild(link);
          recorded.appendChild(document.createTextNode(" (" + String(answer.command_run_id).slice(0, 8) + ")."));
          out.appendChild(recorded);
        }
      }
      out.appendChild(rawJson(answer));
    }

    function run(body, confirmed) {
      button.disabled = true;
      out.hidden = false;
      out.dataset.state = "running";
      return postCommand(body).then(function (answer) {
        if (answer.status === 200 && answer.data && isObject(answer.data) && answer.data.intent) {
          showAnswer(answer.data, confirmed, typeof body.text === "string" ? body.text : null);
        } else {
          showError(answer.status, answer.data, answer.text);
        }
      }, function (err) {
        showError(0, null, "the dashboard could not be reached (" + err + ")");
      }).then(function () { button.disabled = false; });
    }

    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var text = input.value.trim();
      if (!text) { input.focus(); return; }
      run({ text: text }, false);
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var feed = document.getElementById("feed");
    if (feed && feed.dataset.feed && window.EventSource) { startFeed(feed); }
    var box = document.getElementById("content");
    if (box && box.dataset.live) { startRefresh(box); mark(true); }
    var commandForm = document.getElementById("command-form");
    if (commandForm && window.fetch) { startConsole(commandForm); }
  });
})();
