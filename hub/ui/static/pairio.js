// Pairio hub UI: small progressive enhancements. Every page works without this script;
// it adds live updates of the job page, the batch page and the jobs list, "load earlier" console output, confirmations,
// and the playground's Python preview. Text from the hub is inserted as text, never as HTML,
// except whole sections of the hub's own (server-escaped) job page.
"use strict";

(function () {
  document.documentElement.classList.add("js");

  function onReady(fn) {
    if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", fn);
    else fn();
  }

  // ------------------------------------------------------------ confirmations and auto-submit
  function setUpForms(root) {
    root = root || document;
    root.querySelectorAll("form[data-confirm]").forEach(function (form) {
      form.addEventListener("submit", function (ev) {
        if (!window.confirm(form.getAttribute("data-confirm"))) ev.preventDefault();
      });
    });
    root.querySelectorAll("select[data-autosubmit]").forEach(function (select) {
      select.addEventListener("change", function () { select.form.submit(); });
    });
  }

  // ------------------------------------------------------------ the job page
  function setUpJobPage() {
    var job = document.getElementById("job");
    if (!job) return;
    var jobId = job.getAttribute("data-job-id");
    var consoleEl = document.getElementById("console");
    var consoleEnd = parseInt(job.getAttribute("data-console-end"), 10) || 0;
    var status = job.getAttribute("data-status");
    var numEvents = parseInt(job.getAttribute("data-num-events"), 10) || 0;
    var resourceLogSize = parseInt(job.getAttribute("data-resource-log-size"), 10) || 0;
    var delay = 1000;
    var stopped = false;

    if (consoleEl) consoleEl.scrollTop = consoleEl.scrollHeight;
    setUpEarlierOutput(jobId, consoleEl);

    function atBottom() {
      return consoleEl.scrollTop + consoleEl.clientHeight >= consoleEl.scrollHeight - 24;
    }

    function appendConsole(text) {
      if (!text) return;
      var follow = atBottom();
      consoleEl.appendChild(document.createTextNode(text));
      var empty = document.getElementById("console-empty");
      if (empty) empty.hidden = true;
      if (follow) consoleEl.scrollTop = consoleEl.scrollHeight;
    }

    function refreshSections() {
      return fetch(window.location.pathname, { headers: { Accept: "text/html" }, credentials: "same-origin" })
        .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.text(); })
        .then(function (html) {
          var doc = new DOMParser().parseFromString(html, "text/html");
          document.querySelectorAll("[data-live-section]").forEach(function (old) {
            var fresh = doc.getElementById(old.id);
            if (fresh) old.replaceWith(document.importNode(fresh, true));
          });
          var actions = document.getElementById("job-actions");
          if (actions) setUpForms(actions);
          document.title = doc.title;
          showLive(!stopped);
        });
    }

    function showLive(on) {
      var dot = document.getElementById("live-indicator");
      if (dot) dot.hidden = !on;
    }

    function poll() {
      var url = "/job/" + encodeURIComponent(jobId) + "/live?consoleOffset=" + consoleEnd;
      fetch(url, { credentials: "same-origin", cache: "no-store" })
        .then(function (r) {
          if (r.status === 404) { stopped = true; showLive(false); return null; }  // the job was deleted
          if (!r.ok) throw new Error("HTTP " + r.status);
          return r.json();
        })
        .then(function (data) {
          if (data === null) return;
          var c = data.console;
          if (c.start === consoleEnd) {
            appendConsole(c.text);
            consoleEnd = c.end;
          }
          var sizeEl = document.getElementById("console-size");
          if (sizeEl) sizeEl.textContent = formatBytes(c.size);
          var moreConsole = consoleEnd < c.size;
          var changed = data.status !== status || data.numEvents !== numEvents || data.resourceLogSize !== resourceLogSize;
          status = data.status;
          numEvents = data.numEvents;
          resourceLogSize = data.resourceLogSize;
          job.setAttribute("data-status", status);
          if (data.isTerminal && !moreConsole) stopped = true;
          delay = moreConsole ? 50 : (document.hidden ? 5000 : 1000);
          var next = changed ? refreshSections() : Promise.resolve();
          return next.then(function () {
            if (stopped) { job.setAttribute("data-terminal", "true"); showLive(false); return; }
            window.setTimeout(poll, delay);
          });
        })
        .catch(function () {
          delay = Math.min(delay * 2, 15000);  // the hub restarting or the network away: keep trying, slower
          window.setTimeout(poll, delay);
        });
    }

    if (job.getAttribute("data-terminal") !== "true") {
      showLive(true);
      window.setTimeout(poll, 500);
    }
  }

  function setUpEarlierOutput(jobId, consoleEl) {
    var link = document.getElementById("console-earlier");
    if (!link || !consoleEl) return;
    link.addEventListener("click", function (ev) {
      ev.preventDefault();
      var end = parseInt(link.getAttribute("data-end"), 10) || 0;
      fetch("/job/" + encodeURIComponent(jobId) + "/console.json?end=" + end, { credentials: "same-origin" })
        .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
        .then(function (c) {
          var before = consoleEl.scrollHeight;
          consoleEl.insertBefore(document.createTextNode(c.text), consoleEl.firstChild);
          consoleEl.scrollTop += consoleEl.scrollHeight - before;
          link.setAttribute("data-end", String(c.start));
          link.hidden = c.start === 0;
        });
    });
  }

  function formatBytes(n) {
    var units = ["B", "KB", "MB", "GB", "TB"];
    var i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return i === 0 ? n + " B" : n.toFixed(1) + " " + units[i];
  }

  // ------------------------------------------------------------ pages that follow unfinished jobs
  // The batch page and the jobs list redraw their [data-live-section]s from a fresh copy of the same URL
  // (filters, sort and page kept), only while the tab is visible, until no job they show is unfinished.

  function whenVisible(fn) {
    if (!document.hidden) { fn(); return; }
    var root = document.documentElement;
    root.setAttribute("data-live-paused", "true");  // no polls from a hidden tab
    document.addEventListener("visibilitychange", function again() {
      if (document.hidden) return;
      document.removeEventListener("visibilitychange", again);
      root.removeAttribute("data-live-paused");
      fn();
    });
  }

  function redrawLiveSections() {
    return fetch(window.location.href, { headers: { Accept: "text/html" }, credentials: "same-origin", cache: "no-store" })
      .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.text(); })
      .then(function (html) {
        var doc = new DOMParser().parseFromString(html, "text/html");
        document.querySelectorAll("[data-live-section]").forEach(function (old) {
          var fresh = doc.getElementById(old.id);
          if (fresh) old.replaceWith(document.importNode(fresh, true));
        });
        return doc;
      });
  }

  function showLiveDot(on) {
    var dot = document.getElementById("live-indicator");
    if (dot) dot.hidden = !on;
  }

  function setUpBatchPage() {
    var batch = document.getElementById("batch");
    if (!batch || batch.getAttribute("data-finished") === "true") return;
    var url = "/v1/batches/" + encodeURIComponent(batch.getAttribute("data-batch-id"));
    var counts = batch.getAttribute("data-counts");
    var statusOrder = counts.split(",").map(function (pair) { return pair.split("=")[0]; });
    var delay = 2000;

    function signature(c) {
      return statusOrder.map(function (st) { return st + "=" + (c[st] || 0); }).join(",");
    }

    function poll() {
      fetch(url, { credentials: "same-origin", cache: "no-store" })
        .then(function (r) {
          if (r.status === 404) return null;  // every job of the batch was deleted
          if (!r.ok) throw new Error("HTTP " + r.status);
          return r.json();
        })
        .then(function (data) {
          if (data === null) { showLiveDot(false); return; }
          var fresh = signature(data.counts);
          var redraw = fresh !== counts ? redrawLiveSections() : Promise.resolve();
          counts = fresh;
          return redraw.then(function () {
            batch.setAttribute("data-counts", counts);
            if (data.isFinished) { batch.setAttribute("data-finished", "true"); showLiveDot(false); return; }
            showLiveDot(true);
            delay = 2000;
            window.setTimeout(function () { whenVisible(poll); }, delay);
          });
        })
        .catch(function () {
          delay = Math.min(delay * 2, 15000);  // the hub restarting or the network away: keep trying, slower
          window.setTimeout(function () { whenVisible(poll); }, delay);
        });
    }

    showLiveDot(true);
    window.setTimeout(function () { whenVisible(poll); }, delay);
  }

  function setUpJobsList() {
    var live = document.getElementById("jobs-live");
    if (!live || live.getAttribute("data-live") !== "true") return;
    var delay = 3000;

    function poll() {
      redrawLiveSections()
        .then(function () {
          var fresh = document.getElementById("jobs-live");
          if (!fresh || fresh.getAttribute("data-live") !== "true") return;  // every listed job finished
          showLiveDot(true);
          delay = 3000;
          window.setTimeout(function () { whenVisible(poll); }, delay);
        })
        .catch(function () {
          delay = Math.min(delay * 2, 30000);
          window.setTimeout(function () { whenVisible(poll); }, delay);
        });
    }

    showLiveDot(true);
    window.setTimeout(function () { whenVisible(poll); }, delay);
  }

  // ------------------------------------------------------------ the playground's Python preview
  function setUpPlayground() {
    var form = document.getElementById("submit-form");
    var code = document.getElementById("python-code");
    if (!form || !code) return;
    var timer = null;
    var latest = 0;
    function update() {
      var params = new URLSearchParams();
      new FormData(form).forEach(function (value, key) {
        var field = form.elements.namedItem(key);
        // a secret parameter's value stays in the browser (URLs end up in logs): the code shows a placeholder
        if (field && field.type === "password" && value) value = "***";
        if (key !== "csrf_token") params.append(key, value);
      });
      var mine = ++latest;
      fetch(code.getAttribute("data-code-url") + "?" + params.toString(), { credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (text) { if (text !== null && mine === latest) code.textContent = text; });
    }
    function later() { window.clearTimeout(timer); timer = window.setTimeout(update, 250); }
    form.addEventListener("input", later);
    form.addEventListener("change", later);
  }

  onReady(function () {
    setUpForms(document);
    setUpJobPage();
    setUpBatchPage();
    setUpJobsList();
    setUpPlayground();
  });
})();
