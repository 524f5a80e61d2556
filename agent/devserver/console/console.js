// PulseUp dev console: live parts of the server-rendered pages (docs/devserver.md,
// "Web console"). Agent data is hostile: it is only ever set with textContent or as SVG
// attribute numbers, never parsed as HTML.
"use strict";

(function () {
  var SVG = "http://www.w3.org/2000/svg";
  var POINTS = 60;
  var body = document.body;
  var uid = body.dataset.uid;
  var base = uid ? "/console/agents/" + encodeURIComponent(uid) : "";

  function el(tag, text, cls) {
    var node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (cls) node.className = cls;
    return node;
  }

  function badgeKind(text) {
    text = String(text).toLowerCase();
    if (["running", "connected", "succeeded", "completed", "healthy", "active", "ok", "success"].indexOf(text) >= 0) return "good";
    if (["failed", "revoked", "dead", "unhealthy", "error", "cancelled", "expired"].indexOf(text) >= 0) return "bad";
    if (["stopped", "disconnected", "exited", "none", "-"].indexOf(text) >= 0) return "idle";
    return "busy";
  }

  function badge(text) {
    return el("span", text, "badge " + badgeKind(text));
  }

  function setBadge(node, text) {
    if (!node) return;
    node.textContent = "";
    node.appendChild(badge(text));
  }

  // `reset` runs each time the stream (re)opens: a stream that replays what happened so far
  // must not show it twice after EventSource reconnected by itself.
  function listen(path, handlers, reset) {
    var source = new EventSource(path);
    if (reset) source.addEventListener("open", reset);
    Object.keys(handlers).forEach(function (name) {
      source.addEventListener(name, function (event) {
        var data;
        try { data = JSON.parse(event.data); } catch (e) { return; }
        handlers[name](data);
      });
    });
    return source;
  }

  // Charts ---------------------------------------------------------------------------------

  function Chart(svg, max) {
    this.svg = svg;
    this.max = max;
    this.series = [[], []];
  }

  Chart.prototype.push = function (values) {
    for (var i = 0; i < values.length; i++) {
      var v = Number(values[i]);
      this.series[i].push(isFinite(v) ? v : 0);
      if (this.series[i].length > POINTS) this.series[i].shift();
    }
    this.draw();
  };

  Chart.prototype.draw = function () {
    var svg = this.svg, top = this.max;
    if (!top) {
      top = 1;
      this.series.forEach(function (s) { s.forEach(function (v) { if (v > top) top = v; }); });
      top *= 1.2;
    }
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    [25, 50, 75].forEach(function (y) {
      var line = document.createElementNS(SVG, "line");
      line.setAttribute("x1", "0"); line.setAttribute("x2", "300");
      line.setAttribute("y1", String(y)); line.setAttribute("y2", String(y));
      line.setAttribute("class", "grid");
      svg.appendChild(line);
    });
    this.series.forEach(function (s, index) {
      if (!s.length) return;
      var points = s.map(function (v, i) {
        var x = (POINTS - s.length + i) * 300 / (POINTS - 1);
        var y = 100 - Math.min(v / top, 1) * 96 - 2;
        return x.toFixed(1) + "," + y.toFixed(1);
      });
      var first = points[0].split(",")[0], lastX = points[points.length - 1].split(",")[0];
      var area = document.createElementNS(SVG, "polygon");
      area.setAttribute("points", first + ",100 " + points.join(" ") + " " + lastX + ",100");
      area.setAttribute("class", "area area-" + index);
      svg.appendChild(area);
      var line = document.createElementNS(SVG, "polyline");
      line.setAttribute("points", points.join(" "));
      line.setAttribute("class", "series series-" + index);
      svg.appendChild(line);
    });
    svg.setAttribute("data-points", String(this.series[0].length));
  };

  // Agent overview -------------------------------------------------------------------------

  function agentPage() {
    var charts = {};
    ["cpu", "memory", "disk"].forEach(function (m) {
      charts[m] = new Chart(document.getElementById("chart-" + m), 100);
    });
    charts.network = new Chart(document.getElementById("chart-network"), 0);
    var last = null;

    function show(metric, text) {
      document.getElementById("value-" + metric).textContent = text;
    }

    listen(base + "/stream", {
      stats: function (s) {
        charts.cpu.push([s.cpu_percent]);
        charts.memory.push([s.memory_usage_percent]);
        charts.disk.push([s.disk_usage_percent]);
        show("cpu", Number(s.cpu_percent).toFixed(1) + " %");
        show("memory", Number(s.memory_usage_percent).toFixed(1) + " % of " +
             Number(s.memory_total_gb).toFixed(1) + " GiB");
        show("disk", Number(s.disk_usage_percent).toFixed(1) + " % of " +
             Number(s.disk_total_gb).toFixed(0) + " GiB");
        var now = Date.now();
        if (last) {
          var dt = Math.max((now - last.at) / 1000, 0.001);
          var rx = Math.max(0, (s.network_bytes_in - last.rx) / dt / 1024);
          var tx = Math.max(0, (s.network_bytes_out - last.tx) / dt / 1024);
          charts.network.push([rx, tx]);
          show("network", "in " + rx.toFixed(1) + " / out " + tx.toFixed(1));
        }
        last = {at: now, rx: s.network_bytes_in, tx: s.network_bytes_out};
      },
      stats_error: function (d) { show("cpu", "unavailable: " + d.error); },
      containers: function (d) { fillContainers(d.containers || []); },
      frame: function (d) { onFrame(d.name, d.frame); }
    });
  }

  function fillContainers(rows) {
    var tbody = document.querySelector("#containers tbody");
    if (!tbody) return;
    tbody.textContent = "";
    if (!rows.length) {
      var empty = el("tr");
      var cell = el("td", "no managed container", "empty");
      cell.colSpan = 4;
      empty.appendChild(cell);
      tbody.appendChild(empty);
    }
    rows.forEach(function (r) {
      var tr = el("tr");
      tr.appendChild(el("td", r.name));
      var state = el("td");
      state.appendChild(badge(r.status));
      tr.appendChild(state);
      tr.appendChild(el("td", r.cpu == null ? "-" : Number(r.cpu).toFixed(1)));
      tr.appendChild(el("td", r.memory == null ? "-" : Number(r.memory).toFixed(1)));
      tbody.appendChild(tr);
    });
  }

  function onFrame(name, frame) {
    var data = (frame && typeof frame.data === "object" && frame.data) || {};
    if (name === "connected" || name === "disconnected") {
      setBadge(document.getElementById("agent-state"), name);
    } else if (name === "update_service_status" && typeof data.service_uid === "string") {
      document.querySelectorAll("[data-service]").forEach(function (row) {
        if (row.dataset.service !== data.service_uid) return;
        setBadge(row.classList.contains("service-state") ? row : row.querySelector(".service-state"), data.status);
      });
    } else if (name === "console_job") {
      var row = document.querySelector('tr[data-job="' + Number(data.id) + '"] .job-state');
      if (row) setBadge(row, data.state);
    }
  }

  // One service: live container logs -------------------------------------------------------

  function appendLines(pre, text, cls) {
    var span = el("span", text.replace(/\n?$/, "\n"), cls);
    pre.appendChild(span);
    while (pre.childNodes.length > 2000) pre.removeChild(pre.firstChild);
    pre.scrollTop = pre.scrollHeight;
  }

  function servicePage() {
    var pre = document.getElementById("service-logs");
    var path = base + "/services/" + encodeURIComponent(body.dataset.service) + "/logs";
    listen(path, {
      log: function (d) { appendLines(pre, d.message, d.type === "log" ? d.stream : d.type); },
      logs_error: function (d) { appendLines(pre, "logs unavailable: " + d.error, "error"); }
    }, function () { pre.textContent = ""; });
  }

  // One deployment: log and status ---------------------------------------------------------

  function deploymentPage() {
    var pre = document.getElementById("deploy-log");
    var finished = false;
    var path = base + "/deployments/" + encodeURIComponent(body.dataset.deployment) + "/stream";
    listen(path, {
      frame: function (d) {
        var data = (d.frame && d.frame.data) || {};
        if (d.name === "deployment_log_chunk") {
          if (data.reset) pre.textContent = "";
          if (typeof data.chunk === "string" && data.chunk) appendLines(pre, data.chunk, data.log_type);
          if (Array.isArray(data.steps)) showSteps(data.steps);
        } else if (d.name === "update_deployment_status") {
          setBadge(document.getElementById("deploy-status"), data.status);
          document.getElementById("deploy-phase").textContent = data.phase || "-";
          document.getElementById("deploy-message").textContent = data.error || data.message || "-";
          finished = finished || ["completed", "failed", "cancelled"].indexOf(data.status) >= 0;
        } else if (d.name === "console_job" && data.state !== "running") {
          if (data.state === "failed" && !finished) setBadge(document.getElementById("deploy-status"), "failed");
          if (data.error) document.getElementById("deploy-message").textContent = data.error;
          body.dataset.done = data.state;
        }
      }
    }, function () {
      pre.textContent = "";
      document.getElementById("deploy-steps").textContent = "";
    });
  }

  function showSteps(steps) {
    var list = document.getElementById("deploy-steps");
    list.textContent = "";
    steps.forEach(function (step) {
      if (!step || typeof step !== "object") return;
      var item = el("li", (step.name || step.id || "step") + " ");
      item.appendChild(badge(step.status || "-"));
      list.appendChild(item);
    });
  }

  // Events ---------------------------------------------------------------------------------

  // The event's own timestamp (Unix s or RFC 3339), else the time it arrived here.
  function eventTime(data) {
    var ts = data && typeof data === "object" ? data.timestamp : null;
    var when = typeof ts === "number" ? new Date(ts * 1000) : typeof ts === "string" ? new Date(ts) : new Date();
    if (isNaN(when.getTime())) when = new Date();
    return when.toISOString().replace("T", " ").slice(0, 19);
  }

  function eventsPage() {
    var tbody = document.querySelector("#events tbody");
    var filter = document.getElementById("event-filter");
    var pause = document.getElementById("event-pause");

    function matches(row) {
      var q = filter.value.trim().toLowerCase();
      return !q || row.dataset.text.indexOf(q) >= 0;
    }

    filter.addEventListener("input", function () {
      tbody.querySelectorAll("tr").forEach(function (row) { row.hidden = !matches(row); });
    });

    listen(base + "/events/stream", {
      frame: function (d) {
        if (pause.checked) return;
        var json = JSON.stringify(d.frame && d.frame.data);
        var tr = el("tr");
        tr.dataset.text = (d.name + " " + json).toLowerCase();
        tr.appendChild(el("td", eventTime(d.frame && d.frame.data)));
        tr.appendChild(el("td", d.name, "event-name"));
        tr.appendChild(el("td", json && json.length > 600 ? json.slice(0, 600) + "..." : json, "event-data"));
        tr.hidden = !matches(tr);
        tbody.insertBefore(tr, tbody.firstChild);
        while (tbody.childNodes.length > 1000) tbody.removeChild(tbody.lastChild);
      }
    }, function () { tbody.textContent = ""; });
  }

  var pages = {agent: agentPage, service: servicePage, deployment: deploymentPage, events: eventsPage};
  if (pages[body.dataset.page]) pages[body.dataset.page]();
})();
