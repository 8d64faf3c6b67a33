// A known JavaScript call chain, hot for the wall-clock seconds given as the first argument:
// main loop → chainOuter → chainMiddle → leafHot. Run with --no-turbo-inlining so the optimised
// code keeps each call as its own frame.
'use strict';

function leafHot(n) {
  let s = 0;
  for (let i = 0; i < n; i++) {
    s += Math.sqrt(i) * i;
  }
  return s;
}

function chainMiddle(n) {
  return leafHot(n) + 1;
}

function chainOuter(n) {
  return chainMiddle(n) + 1;
}

const seconds = Number(process.argv[2] || 1);
const end = Date.now() + seconds * 1000;
let total = 0;
while (Date.now() < end) {
  total += chainOuter(100000);
}
if (total < 0) console.log(total);
