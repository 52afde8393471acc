// Polls /dashboard/data and draws the totals and the clicks-per-second chart.
"use strict";

(function () {
  const root = document.getElementById("dashboard");
  const chartElement = document.getElementById("chart");
  const statusElement = document.getElementById("status");
  const minutesSelect = document.getElementById("minutes");

  const dataUrl = root.dataset.url;
  const refreshMs = Number(root.dataset.refreshMs);
  const fraudTypes = JSON.parse(root.dataset.fraudTypes);
  const CHART_HEIGHT_PX = 320;
  const COLORS = {clean: "#2e7d32", ip_blacklist: "#c62828", click_spam: "#ef6c00"};
  const OTHER_COLORS = ["#1565c0", "#6a1b9a", "#00838f"];

  let plot = null;
  let timer = null;

  function colorOf(fraudType, index) {
    return COLORS[fraudType] || OTHER_COLORS[index % OTHER_COLORS.length];
  }

  function showStatus(text, isError) {
    statusElement.textContent = text;
    statusElement.classList.toggle("error", isError);
  }

  function formatCount(count) {
    return count.toLocaleString("en-US");
  }

  function createPlot(columns) {
    const series = [{}];
    fraudTypes.forEach(function (fraudType, index) {
      series.push({
        label: fraudType,
        stroke: colorOf(fraudType, index),
        width: 2,
        value: function (self, value) { return value === null ? "–" : value + "/s"; },
      });
    });
    const options = {
      width: chartElement.clientWidth,
      height: CHART_HEIGHT_PX,
      series: series,
      scales: {y: {range: function (self, min, max) { return [0, Math.max(1, max)]; }}},
      axes: [{}, {label: "clicks/s"}],
    };
    return new uPlot(options, columns, chartElement);
  }

  // Returns false when the chart library did not load, so that only the totals show.
  function drawChart(data) {
    if (typeof uPlot === "undefined") {
      return false;
    }
    const columns = [data.timestamps].concat(fraudTypes.map(function (fraudType) {
      return data.per_second[fraudType];
    }));
    if (plot === null) {
      plot = createPlot(columns);
    } else {
      plot.setData(columns);
    }
    return true;
  }

  function render(data) {
    document.getElementById("total").textContent = formatCount(data.total);
    fraudTypes.forEach(function (fraudType) {
      document.getElementById("total-" + fraudType).textContent = formatCount(data.totals[fraudType]);
    });
    const share = data.fraud_share === null ? "–" : (100 * data.fraud_share).toFixed(1) + " %";
    document.getElementById("fraud-share").textContent = share;
    return drawChart(data);
  }

  async function refresh() {
    clearTimeout(timer);
    try {
      const response = await fetch(dataUrl + "?minutes=" + minutesSelect.value, {cache: "no-store"});
      const body = await response.json();
      if (!response.ok) {
        throw new Error(body.message || "HTTP " + response.status);
      }
      const updated = "Updated " + new Date().toLocaleTimeString();
      if (render(body)) {
        root.dataset.state = "loaded";
        showStatus(updated, false);
      } else {
        root.dataset.state = "no-chart";
        showStatus(updated + ". No chart: the library uPlot did not load, so run `npm ci` on the server.", true);
      }
    } catch (error) {
      root.dataset.state = "error";
      showStatus("No new data: " + error.message, true);
    } finally {
      timer = setTimeout(refresh, refreshMs);
    }
  }

  minutesSelect.addEventListener("change", refresh);
  window.addEventListener("resize", function () {
    if (plot !== null) {
      plot.setSize({width: chartElement.clientWidth, height: CHART_HEIGHT_PX});
    }
  });
  refresh();
})();
