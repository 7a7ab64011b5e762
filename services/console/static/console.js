// Draws every chart of a page with uPlot (vendored, see vendor/README.md) from the JSON the
// server embedded beside it. Each drawn chart is kept in window.ctloopCharts[id] so that a
// test (or a curious user in the devtools) can read what it holds.
"use strict";
window.ctloopCharts = {};

const COLORS = ["#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#0891b2"];
const P_FLOOR = 1e-12; // a log axis cannot show 0: smaller p-values are drawn at the floor

function linesPlugin(spec) {
  // Vertical marks (alarms, swaps, rollbacks) and horizontal thresholds, drawn over the plot.
  return {
    hooks: {
      draw: [
        (u) => {
          const ctx = u.ctx;
          ctx.save();
          ctx.lineWidth = 1.5 * devicePixelRatio;
          ctx.font = `${11 * devicePixelRatio}px sans-serif`;
          for (const mark of spec.marks || []) {
            const x = u.valToPos(mark.x, "x", true);
            if (x < u.bbox.left || x > u.bbox.left + u.bbox.width) continue;
            ctx.strokeStyle = "#9333ea";
            ctx.setLineDash([4 * devicePixelRatio, 3 * devicePixelRatio]);
            ctx.beginPath();
            ctx.moveTo(x, u.bbox.top);
            ctx.lineTo(x, u.bbox.top + u.bbox.height);
            ctx.stroke();
            ctx.fillStyle = "#9333ea";
            ctx.fillText(mark.label, x + 3, u.bbox.top + 12 * devicePixelRatio);
          }
          for (const line of spec.hlines || []) {
            const y = u.valToPos(line.y, line.scale || "y", true);
            ctx.strokeStyle = "#6b7280";
            ctx.setLineDash([2 * devicePixelRatio, 2 * devicePixelRatio]);
            ctx.beginPath();
            ctx.moveTo(u.bbox.left, y);
            ctx.lineTo(u.bbox.left + u.bbox.width, y);
            ctx.stroke();
            ctx.fillStyle = "#374151";
            // thresholds of a right-hand axis are labelled on the right
            const right = line.scale && u.axes.some((a) => a.scale === line.scale && a.side === 1);
            ctx.textAlign = right ? "right" : "left";
            ctx.fillText(line.label, right ? u.bbox.left + u.bbox.width - 4 : u.bbox.left + 4, y - 4);
          }
          ctx.restore();
        },
      ],
    },
  };
}

function options(spec, width, height) {
  const base = { width, height, plugins: [linesPlugin(spec)], legend: { show: true } };
  const series = [{}];
  if (spec.type === "bars") {
    const bars = uPlot.paths.bars({ size: [0.8, 60], align: 0 });
    spec.series.forEach((s, i) =>
      series.push({ label: s.label, stroke: COLORS[i], fill: COLORS[i] + "66", width: 1, paths: bars, points: { show: false } })
    );
    return {
      ...base,
      series,
      scales: { x: { time: false, range: (u, min, max) => [min - 0.5, max + 0.5] }, y: { range: (u, min, max) => [0, max * 1.1 || 1] } },
      axes: [
        { values: (u, ticks) => ticks.map((t) => spec.labels[t] ?? ""), rotate: -30, size: 60 },
        { label: spec.ylabel || "" },
      ],
    };
  }
  if (spec.type === "drift") {
    // a window where the column drifted gets a large red point on the effect line
    series.push({ label: spec.series[0].label, stroke: COLORS[0], scale: "p", width: 1.5, points: { show: true, size: 4 } });
    series.push({
      label: spec.series[1].label,
      stroke: COLORS[3],
      scale: "effect",
      width: 1.5,
      points: { show: true, size: 4 },
    });
    series.push({
      label: "drifted",
      stroke: COLORS[1],
      fill: COLORS[1],
      scale: "effect",
      paths: () => null,
      points: { show: true, size: 9, fill: COLORS[1] },
    });
    const lowest = Math.min(spec.hlines[0].y, ...spec.series[0].values.filter((v) => v !== null && v > 0));
    return {
      ...base,
      series,
      scales: {
        p: { distr: 3, range: () => [Math.max(lowest / 10, P_FLOOR), 1] },
        effect: { range: (u, min, max) => [0, Math.max(max, spec.hlines[1].y) * 1.2] },
      },
      axes: [
        {},
        { scale: "p", label: "adjusted p", values: (u, ticks) => ticks.map((t) => (t == null ? "" : t >= 0.01 ? String(t) : t.toExponential(0))) },
        { scale: "effect", side: 1, label: "effect", grid: { show: false } },
      ],
    };
  }
  const stepped = spec.type === "step" ? uPlot.paths.stepped({ align: 1 }) : undefined;
  spec.series.forEach((s, i) =>
    series.push({ label: s.label, stroke: COLORS[i % COLORS.length], width: 2, paths: stepped, spanGaps: spec.type !== "step" })
  );
  const y = spec.yrange ? { range: spec.yrange } : {};
  const yAxis = { label: spec.ylabel || "" };
  if (spec.type === "step") {
    // versions are whole numbers: tick only those, written as v1, v2, ...
    y.range = (u, min, max) => [Math.floor(min) - 0.5, Math.ceil(max) + 0.5];
    yAxis.incrs = [1, 2, 5, 10, 20, 50, 100];
    yAxis.values = (u, ticks) => ticks.map((t) => (Number.isInteger(t) ? "v" + t : ""));
  }
  // one point alone would get a range of years around it: show ten minutes instead
  const x = { time: true, range: (u, min, max) => (min === max ? [min - 300, max + 300] : [min, max]) };
  return { ...base, series, scales: { x, y }, axes: [{}, yAxis] };
}

function data(spec) {
  if (spec.type === "drift") {
    const p = spec.series[0].values.map((v) => (v === null ? null : Math.max(v, P_FLOOR)));
    const effect = spec.series[1].values;
    return [spec.x, p, effect, effect.map((v, i) => (spec.drifted[i] ? v : null))];
  }
  return [spec.x, ...spec.series.map((s) => s.values)];
}

function draw(element) {
  const spec = JSON.parse(document.getElementById(element.id + "-data").textContent);
  const height = Number(element.dataset.height || 220);
  const plot = new uPlot(options(spec, element.clientWidth || 600, height), data(spec), element);
  window.ctloopCharts[element.id] = { plot, spec };
  new ResizeObserver(() => plot.setSize({ width: element.clientWidth, height })).observe(element);
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll(".chart").forEach(draw);
  document.body.dataset.chartsDrawn = String(Object.keys(window.ctloopCharts).length);
});
