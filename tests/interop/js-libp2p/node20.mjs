// Node 20 lacks Promise.withResolvers (ES2024, in Node >= 22). One floating
// transitive dependency of js-libp2p 2.x calls it — it-queue, every version,
// via mortice 3.3 via @libp2p/peer-store 11 — so define it, exactly as the
// specification does, when it is missing. A no-op on Node >= 22.
// Imported before anything else by check.mjs.
if (typeof Promise.withResolvers !== 'function') {
  Object.defineProperty(Promise, 'withResolvers', {
    configurable: true,
    writable: true,
    enumerable: false,
    value: function withResolvers () {
      let resolve
      let reject
      const promise = new this((res, rej) => {
        resolve = res
        reject = rej
      })
      return { promise, resolve, reject }
    }
  })
}
