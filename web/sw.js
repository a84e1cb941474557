// The playground's service worker: it keeps the page, its script, its styles and the engine's
// WebAssembly module, so that the playground works offline once loaded. The list and the version
// are filled in by build.mjs; a new build has a new version, which replaces the old cache.
const VERSION = "__VERSION__";
const FILES = __FILES__;
const CACHE = `keyclaim-playground-${VERSION}`;

self.addEventListener("install", (event) => {
  event.waitUntil(
    caches.open(CACHE).then((c) => c.addAll(FILES.map((f) => new Request(f, { cache: "no-cache" })))).then(() => self.skipWaiting()),
  );
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches
      .keys()
      .then((keys) => Promise.all(keys.filter((k) => k.startsWith("keyclaim-playground-") && k !== CACHE).map((k) => caches.delete(k))))
      .then(() => self.clients.claim()),
  );
});

// Only the playground's own files are answered from the cache; everything else, the keys
// server's API and live mode's configuration included, always goes to the network. The page
// itself ("/", "index.html") is asked of the network first and taken from the cache only when the
// network cannot be reached: a server that no longer serves the playground (started without
// --dev or --playground) answers with its own error, and this worker then removes itself.
self.addEventListener("fetch", (event) => {
  const req = event.request;
  if (req.method !== "GET") return;
  const url = new URL(req.url);
  if (url.origin !== self.location.origin) return;
  const scope = new URL(self.registration.scope);
  if (!url.pathname.startsWith(scope.pathname)) return;
  let name = url.pathname.slice(scope.pathname.length);
  if (name === "") name = "index.html";
  if (!FILES.includes(name)) return;
  if (name === "index.html") {
    event.respondWith(
      fetch(req).then(
        async (res) => {
          if (res.status === 404 || res.status === 410) {
            await Promise.all((await caches.keys()).filter((k) => k.startsWith("keyclaim-playground-")).map((k) => caches.delete(k)));
            await self.registration.unregister();
          }
          return res;
        },
        async () => (await caches.open(CACHE).then((c) => c.match(name))) ?? Response.error(),
      ),
    );
    return;
  }
  event.respondWith(
    caches.open(CACHE).then(async (c) => {
      const hit = await c.match(name);
      if (hit) return hit;
      const res = await fetch(req);
      if (res.ok) await c.put(name, res.clone());
      return res;
    }),
  );
});
