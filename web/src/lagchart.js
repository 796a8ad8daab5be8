// The live replication-lag chart (uPlot): lag in bytes on the left axis and
// in seconds on the right, one sample per poll, the last kMaxSamples kept.
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import { fmtBytes, fmtTime, h } from './dom.js';

// Time-axis steps in seconds: samples come once a second, so no finer ticks.
const kTimeIncrs = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600];

const kMaxSamples = 600; // ten minutes at one poll a second
const kHeight = 220;

export class LagChart {
  constructor() {
    this.el = h('div.lagchart', { role: 'img', 'aria-label': 'replication lag over time' });
    this.data = [[], [], []];
    this.plot = null;
    this.resize = () => this.plot && this.plot.setSize({ width: this.width(), height: kHeight });
    window.addEventListener('resize', this.resize);
  }

  width() {
    return Math.max(320, (this.el.parentElement || this.el).clientWidth - 8);
  }

  // Adds the sample of one poll; null values (no replica yet) leave a gap.
  add(tMs, lagBytes, lagSeconds) {
    const [t, b, s] = this.data;
    t.push(tMs / 1000);
    b.push(lagBytes ?? null);
    s.push(lagSeconds ?? null);
    if (t.length > kMaxSamples) this.data.forEach((a) => a.shift());
    if (!this.plot && this.el.isConnected) this.create();
    else if (this.plot) this.plot.setData(this.data);
  }

  create() {
    const opts = {
      width: this.width(),
      height: kHeight,
      cursor: { drag: { x: false, y: false } },
      scales: { x: { time: true }, bytes: { range: (u, min, max) => [0, Math.max(1024, max * 1.1)] },
        secs: { range: (u, min, max) => [0, Math.max(1, max * 1.1)] } },
      series: [
        {},
        { label: 'lag bytes', scale: 'bytes', stroke: '#2563eb', width: 2, fill: 'rgba(37,99,235,0.08)',
          value: (u, v) => (v === null ? '–' : fmtBytes(v)) },
        { label: 'lag seconds', scale: 'secs', stroke: '#d97706', width: 2,
          value: (u, v) => (v === null ? '–' : `${v.toFixed(2)} s`) },
      ],
      axes: [
        { space: 70, incrs: kTimeIncrs, values: (u, vals) => vals.map((v) => fmtTime(v * 1000)) },
        { scale: 'bytes', values: (u, vals) => vals.map(fmtBytes), size: 70 },
        { scale: 'secs', side: 1, values: (u, vals) => vals.map((v) => `${v} s`), grid: { show: false } },
      ],
    };
    this.plot = new uPlot(opts, this.data, this.el);
  }

  destroy() {
    window.removeEventListener('resize', this.resize);
    if (this.plot) this.plot.destroy();
    this.plot = null;
  }
}
