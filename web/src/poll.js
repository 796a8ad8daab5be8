// Runs `fn` now and then every `ms` after the previous run finished (never
// two at once); a failing run goes to `onError` and polling goes on.
export function poller(ms, fn, onError) {
  let timer = null;
  let stopped = false;
  let running = false;
  let again = false;
  const run = async () => {
    running = true;
    try {
      await fn();
    } catch (err) {
      if (!stopped) onError(err);
    }
    running = false;
    if (stopped) return;
    if (again) {
      again = false;
      run();
    } else {
      timer = setTimeout(run, ms);
    }
  };
  run();
  return {
    stop() {
      stopped = true;
      clearTimeout(timer);
    },
    // Runs once more as soon as possible (after an action).
    now() {
      if (stopped) return;
      if (running) {
        again = true;
        return;
      }
      clearTimeout(timer);
      run();
    },
  };
}
