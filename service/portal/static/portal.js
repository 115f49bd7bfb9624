// The portal's behaviour beyond plain HTML: live progress and new jobs over server-sent events, copy
// buttons and the usage chart. Every page works without it; nothing here loads from another host.
(function () {
  "use strict";

  let source = null;

  // One EventSource per page: each `job` event updates that job's rows; on the list's first page,
  // each `row` is a job made since the page was rendered, already matching its filters.
  function followLiveJobs() {
    if (source) { source.close(); source = null; }
    const live = Array.from(document.querySelectorAll("[data-job][data-live]"));
    const ids = Array.from(new Set(live.map((element) => element.dataset.job)));
    const list = document.querySelector("[data-new-jobs]");
    const query = ids.map((id) => "id=" + encodeURIComponent(id));
    if (list) {
      query.push("new=1");
      ["since", "status", "kind"].forEach((name) => {
        query.push(name + "=" + encodeURIComponent(list.dataset[name] || ""));
      });
    } else if (!ids.length) {
      return;
    }
    source = new EventSource("/portal/jobs/live?" + query.join("&"));
    source.addEventListener("job", (message) => show(JSON.parse(message.data)));
    source.addEventListener("row", (message) => insertRow(list, JSON.parse(message.data)));
    source.addEventListener("done", () => { source.close(); source = null; });
    source.addEventListener("renew", () => followLiveJobs());
  }

  // A new job's row goes where its id sorts (ids sort as their creation times: newest first).
  function insertRow(list, row) {
    if (!list || document.querySelector('tr[data-job="' + CSS.escape(row.id) + '"]')) { return; }
    const body = list.querySelector("tbody");
    body.querySelectorAll("tr.none").forEach((element) => element.remove());
    const template = document.createElement("template");
    template.innerHTML = row.html.trim();
    const older = Array.from(body.querySelectorAll("tr[data-job]")).find((element) => element.dataset.job < row.id);
    body.insertBefore(template.content.firstElementChild, older || null);
  }

  function show(job) {
    document.querySelectorAll('[data-job="' + CSS.escape(job.id) + '"]').forEach((element) => {
      const status = element.querySelector('[data-field="status"]');
      if (status) {
        status.textContent = job.status;
        status.className = "status status-" + job.status.toLowerCase();
      }
      const bar = element.querySelector('[data-field="progress"]');
      if (bar) { bar.value = job.progress; }
      const percent = element.querySelector('[data-field="percent"]');
      if (percent) { percent.textContent = Math.round(job.progress * 100) + "%"; }
      const text = element.querySelector('[data-field="message"]');
      if (text) { text.textContent = job.message || ""; }
      if (job.terminal) {
        delete element.dataset.live;
        if ("reloadWhenDone" in element.dataset) { window.location.reload(); }
      }
    });
  }

  // Copy buttons are hidden until this script shows them: without it, select the text by hand.
  function enableCopyButtons(root) {
    root.querySelectorAll("button[data-copy]").forEach((button) => {
      button.hidden = false;
      button.addEventListener("click", async () => {
        const field = document.getElementById(button.dataset.copy);
        field.select();
        try {
          await navigator.clipboard.writeText(field.value);
        } catch (error) {
          document.execCommand("copy");
        }
        button.textContent = "Copied";
      });
    });
  }

  function drawChart() {
    const box = document.getElementById("jobs-chart");
    if (!box || !window.uPlot) { return; }
    const series = JSON.parse(box.dataset.series);
    const accent = getComputedStyle(document.documentElement).getPropertyValue("--accent").trim();
    const options = {
      width: box.clientWidth,
      height: 240,
      series: [{}, { label: "Jobs", stroke: accent, fill: accent + "22", width: 2, paths: window.uPlot.paths.stepped({ align: 1 }) }],
      axes: [{}, { label: "jobs / hour", size: 60 }],
      scales: { y: { range: (u, min, max) => [0, Math.max(1, max)] } },
      legend: { show: true },
    };
    const chart = new window.uPlot(options, [series.t, series.jobs], box);
    window.addEventListener("resize", () => chart.setSize({ width: box.clientWidth, height: 240 }));
  }

  document.addEventListener("DOMContentLoaded", () => {
    followLiveJobs();
    enableCopyButtons(document);
    drawChart();
  });
  // htmx swapped in other results (a filter or another page of them): follow their jobs instead.
  document.addEventListener("htmx:afterSwap", () => followLiveJobs());
})();
