// The status page's script: a live tail of new events and a refresh of the
// server-rendered summary. Everything it shows of an event is set as text
// (textContent), never parsed as HTML.
(function () {
  "use strict";
  var every = 10000; // refresh the summary, in milliseconds
  var maxRows = 100; // rows of the live tail
  var tail = document.getElementById("tail");
  var state = document.getElementById("tail-state");
  var rows = document.getElementById("tail-rows");
  var refreshState = document.getElementById("refresh-state");
  var tokenReads = tail.dataset.tokenReads === "true";

  function setState(s, text) {
    state.dataset.state = s;
    state.textContent = text;
  }

  function cell(tr, text, cls) {
    var td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    tr.appendChild(td);
  }

  function show(ev) {
    var tr = document.createElement("tr");
    tr.dataset.seq = String(ev.seq);
    tr.dataset.eventId = String(ev.event_id);
    var payload = ev.payload === undefined ? "" : JSON.stringify(ev.payload);
    if (payload.length > 300) payload = payload.slice(0, 300) + "\u2026";
    cell(tr, String(ev.seq));
    cell(tr, String(ev.topic), "name");
    cell(tr, String(ev.event_id), "name");
    cell(tr, String(ev.timestamp));
    cell(tr, payload, "payload");
    rows.insertBefore(tr, rows.firstChild);
    while (rows.childElementCount > maxRows) rows.lastElementChild.remove();
  }

  if (tail.dataset.error) {
    setState("off", "Live tail off: " + tail.dataset.error + ".");
  } else if (!window.EventSource) {
    setState("off", "Live tail off: this browser has no EventSource.");
  } else {
    var es = new EventSource("events?follow=true&after=" + encodeURIComponent(tail.dataset.after));
    setState("connecting", "Connecting\u2026");
    es.onopen = function () {
      setState("open", "Live: new events appear at the top once stored (the latest " + maxRows + " are kept).");
    };
    es.onmessage = function (m) {
      var ev;
      try { ev = JSON.parse(m.data); } catch (e) { return; }
      show(ev);
    };
    es.onerror = function () {
      if (es.readyState !== EventSource.CLOSED) {
        setState("connecting", "Reconnecting\u2026");
      } else if (tokenReads) {
        setState("closed", "Live tail refused: with -token-reads the stream needs the bearer token, " +
          "which a browser's EventSource cannot send. Serve the page through a proxy that adds the " +
          "Authorization header, or follow with curl -N -H 'Authorization: Bearer <token>' <server>/events?follow=true.");
      } else {
        setState("closed", "Live tail ended by the server (it is stopping, or too many follow streams are open): reload the page to retry.");
      }
    };
  }

  function refresh() {
    fetch(location.href, { headers: { Accept: "text/html" }, cache: "no-store", credentials: "same-origin" })
      .then(function (r) {
        if (!r.ok) throw new Error("the server answered " + r.status);
        return r.text();
      })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("summary");
        var cur = document.getElementById("summary");
        if (fresh && cur) cur.replaceWith(document.adoptNode(fresh));
        refreshState.textContent = "The summary refreshes every " + every / 1000 + " s.";
        setTimeout(refresh, every);
      })
      .catch(function (e) {
        refreshState.textContent = "Refresh stopped (" + e.message + "): reload the page.";
      });
  }
  refreshState.textContent = "The summary refreshes every " + every / 1000 + " s.";
  setTimeout(refresh, every);
})();
