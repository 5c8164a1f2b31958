// Files in the page (protocol section 20): uploads over HTTP with their
// progress and a cancel, the composer's list of them, and how a message's
// files are shown. The bytes never go through the WebSocket: the session
// gives the token, XMLHttpRequest carries them (its upload progress events
// are what fetch lacks). User text (file names) only ever becomes text nodes.

/** Uploads run at once per page (the server allows `uploads_at_once`, 2 by default). */
const AT_ONCE = 2;
/** Types the server makes thumbnails of and the page shows inline (20.4). */
const INLINE_TYPES = new Set(["image/png", "image/jpeg", "image/gif", "image/webp"]);
/** The largest a thumbnail is drawn, in CSS pixels (the server's are at most 320). */
const THUMB_BOX = 320;

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/** "512 B", "48 KB", "3.2 MB": as the server's links say sizes (20.6). */
export function sizeText(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  const units = ["KB", "MB", "GB"];
  let value = bytes / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value < 10 ? value.toFixed(1).replace(/\.0$/, "") : Math.round(value)} ${units[unit]}`;
}

/** The HTTP origin of the chat's WebSocket address: where /files is. */
export function httpBase(wsUrl) {
  return new URL(wsUrl.replace(/^ws(s?):/i, "http$1:")).origin;
}

/** A refused upload said in words, from its HTTP status and answer (20.3). */
export function uploadError(name, status, answer, maxUpload) {
  const said = answer && typeof answer.message === "string" ? answer.message : "";
  switch (status) {
    case 0:
      return `${name}: the upload broke off (the connection failed).`;
    case 401:
      return `${name}: the server refused the upload token twice: reconnect and try again.`;
    case 413:
      return `${name} is too large: files are at most ${sizeText(maxUpload)}.`;
    case 507:
      return `${name}: no space left: your files (or the server's) have reached their quota. Deleting messages with files frees some.`;
    case 429:
      return `${name}: too many uploads at once: wait for one to finish, then retry.`;
    case 403:
      return `${name}: you are not a member of this room.`;
    default:
      return `${name}: the upload failed (${said || `HTTP ${status}`}).`;
  }
}

/** A name for a pasted image, which the clipboard calls "image.png". */
export function pastedName(file, now = new Date()) {
  const ext = (file.type.split("/")[1] || "png").replace("jpeg", "jpg").replace(/[^a-z0-9]/g, "");
  const stamp = now.toISOString().slice(0, 19).replace(/[-:]/g, "").replace("T", "-");
  return `screenshot-${stamp}.${ext}`;
}

/** One file on its way to the server, in a room: waiting, uploading,
 * done (with its File), failed (with an error in words) or cancelled. */
export class Upload extends EventTarget {
  constructor(session, file, room, name = file.name) {
    super();
    this.session = session;
    this.file = file;
    this.room = room;
    this.name = name || "file";
    this.state = "waiting";
    this.loaded = 0;
    this.result = null; // the File the server answered
    this.error = "";
    this.xhr = null;
    this.started = false; // taken by the queue (Attachments)
    this.status = null; // the HTTP status of a refusal
  }

  /** Upload; on a 401 a new token is asked for, and the upload tried once more. */
  async start() {
    const max = this.session.limits?.max_upload ?? this.session.files?.maxUpload ?? Infinity;
    if (this.file.size > max) return this._failed(413, null, max); // no bytes sent for nothing
    this._set("uploading");
    try {
      let files = await this.session.fileToken();
      let answer = await this._send(files);
      if (answer.status === 401) {
        files = await this.session.fileToken(true);
        answer = await this._send(files);
      }
      if (this.state === "cancelled") return;
      if (answer.status === 201 && answer.body && typeof answer.body.id === "string") {
        this.result = answer.body;
        this._set("done");
      } else this._failed(answer.status, answer.body, files.maxUpload);
    } catch (e) {
      if (this.state !== "cancelled") {
        this.error = `${this.name}: ${e.message || e}`;
        this._set("failed");
      }
    }
  }

  /** A failed upload waits for its turn again (as after the server's "not now"). */
  retry() {
    if (this.state !== "failed") return;
    this.started = false;
    this.loaded = 0;
    this.error = "";
    this.status = null;
    this._set("waiting");
  }

  cancel() {
    if (this.state === "done" || this.state === "cancelled") return;
    this._set("cancelled");
    this.xhr?.abort();
  }

  get fraction() {
    return this.file.size ? this.loaded / this.file.size : this.state === "done" ? 1 : 0;
  }

  /** One POST; resolves to {status, body} whatever the status (0: no answer). */
  _send(files) {
    return new Promise((resolve) => {
      if (this.state === "cancelled") return resolve({ status: 0, body: null });
      // The page's own site, whatever address the server names (--public-url
      // may be another name for it; the page's CSP allows only its own origin).
      const url = new URL(new URL(files.url, httpBase(this.session.url)).pathname, httpBase(this.session.url));
      url.searchParams.set("room", this.room);
      url.searchParams.set("name", this.name);
      const xhr = new XMLHttpRequest();
      this.xhr = xhr;
      xhr.open("POST", url.href);
      xhr.setRequestHeader("Authorization", `Bearer ${files.token}`);
      xhr.setRequestHeader("Content-Type", this.file.type || "application/octet-stream");
      xhr.responseType = "json";
      xhr.upload.addEventListener("progress", (e) => {
        this.loaded = e.loaded;
        this._emit();
      });
      xhr.addEventListener("load", () => resolve({ status: xhr.status, body: xhr.response }));
      for (const name of ["error", "abort", "timeout"]) xhr.addEventListener(name, () => resolve({ status: 0, body: null }));
      xhr.send(this.file);
    });
  }

  _failed(status, body, max) {
    this.status = status;
    this.error = uploadError(this.name, status, body, max);
    this._set("failed");
  }

  _set(state) {
    this.state = state;
    this._emit();
  }

  _emit() {
    this.dispatchEvent(new CustomEvent("change", { detail: this }));
  }
}

/** The uploads of each room waiting to be sent with a message: at most
 * AT_ONCE at a time, the rest queued; shown above the message box. */
export class Attachments {
  constructor(session, list, changed = () => {}) {
    this.session = session;
    this.list = list; // the <ul> they are shown in
    this.changed = changed;
    this.byRoom = new Map(); // room key -> [Upload]
    this.shown = null; // the room key shown
  }

  add(roomKey, roomName, file, name = file.name) {
    const upload = new Upload(this.session, file, roomName, name);
    const list = this.byRoom.get(roomKey) ?? [];
    list.push(upload);
    this.byRoom.set(roomKey, list);
    upload.addEventListener("change", () => {
      if (upload.state !== "uploading") this._next();
      if (roomKey === this.shown) this._update(upload);
      this.changed();
    });
    if (roomKey === this.shown) this.render();
    this._next();
    return upload;
  }

  /** The room shown: its uploads are the ones listed. */
  show(roomKey) {
    this.shown = roomKey;
    this.render();
  }

  of(roomKey) {
    return (this.byRoom.get(roomKey) ?? []).filter((u) => u.state !== "cancelled");
  }

  busy(roomKey) {
    return this.of(roomKey).some((u) => u.state === "waiting" || u.state === "uploading");
  }

  /** The Files ready to go with the next message. */
  ready(roomKey) {
    return this.of(roomKey).filter((u) => u.state === "done").map((u) => u.result);
  }

  /** After the message took them: the done ones leave the list. */
  sent(roomKey) {
    this.byRoom.set(roomKey, this.of(roomKey).filter((u) => u.state !== "done"));
    this.render();
  }

  remove(upload) {
    upload.cancel();
    for (const [key, list] of this.byRoom) this.byRoom.set(key, list.filter((u) => u !== upload));
    this.render();
    this.changed();
  }

  _next() {
    const all = [...this.byRoom.values()].flat();
    let running = all.filter((u) => u.state === "uploading").length;
    for (const u of all) {
      if (running >= AT_ONCE) break;
      if (u.state !== "waiting" || u.started) continue;
      u.started = true;
      running += 1;
      u.start();
    }
  }

  render() {
    const uploads = this.shown ? this.of(this.shown) : [];
    this.list.replaceChildren(...uploads.map((u) => this._item(u)));
    this.list.hidden = !uploads.length;
  }

  _item(upload) {
    const li = el("li", "attachment");
    li.uploadItem = upload;
    const remove = el("button", "remove", "✕");
    remove.type = "button";
    remove.title = "Cancel this upload (it is not sent)";
    remove.setAttribute("aria-label", `Cancel ${upload.name}`);
    remove.addEventListener("click", () => this.remove(upload));
    li.append(el("span", "file-name", upload.name), " ", el("span", "file-size", sizeText(upload.file.size)), " ");
    const bar = el("progress");
    bar.max = 1;
    const again = el("button", "retry", "Retry");
    again.type = "button";
    again.addEventListener("click", () => upload.retry());
    li.append(bar, el("span", "upload-state"), again, remove);
    this._fill(li, upload);
    return li;
  }

  _update(upload) {
    const li = [...this.list.children].find((n) => n.uploadItem === upload);
    if (li) this._fill(li, upload);
    else this.render();
  }

  _fill(li, upload) {
    li.dataset.state = upload.state;
    const bar = li.querySelector("progress");
    bar.value = upload.fraction;
    bar.hidden = upload.state !== "uploading";
    const words = { waiting: "waiting", uploading: `${Math.floor(upload.fraction * 100)} %`, done: "ready", failed: upload.error };
    li.querySelector(".upload-state").textContent = words[upload.state] ?? "";
    // Retrying can't make a file smaller: a 413 is for good.
    li.querySelector(".retry").hidden = upload.state !== "failed" || upload.status === 413;
    li.classList.toggle("error", upload.state === "failed");
  }
}

/** A file's address: its thumbnail or the file; with the session's token
 * where the room is not open (20.4), else none (it would only leak). */
export function fileAddress(session, file, { thumb = false, token = false } = {}) {
  const name = thumb ? "thumb" : encodeURIComponent(file.name);
  const url = new URL(`/files/${encodeURIComponent(file.id)}/${name}`, httpBase(session.url));
  const held = token ? session.fileTokenNow : null;
  if (held) url.searchParams.set("token", held);
  return url.href;
}

/** Whether files of this room need a token: any room but an open one. */
export function needsToken(room) {
  return !!room && (room.direct || room.inviteOnly || room.secret || !!room.joinKey);
}

/** Whether a file is shown inline as its thumbnail. */
export function inline(file) {
  return !!file.thumb && INLINE_TYPES.has(file.type);
}

/** A message's files: images as thumbnails (a click opens the whole image),
 * any other file as a card with its name, size and a download link. */
export function fileViews(session, room, files) {
  const box = el("div", "files");
  const token = needsToken(room);
  // No token yet: the addresses wait for one (a file of a private room is 404 without it).
  if (token && !session.fileTokenNow) session.fileToken().catch(() => {});
  for (const file of files) {
    box.append(inline(file) ? thumbnail(session, file, token) : card(session, file, token));
  }
  return box;
}

function thumbnail(session, file, token) {
  const b = el("button", "file image");
  b.type = "button";
  b.title = `${file.name}, ${sizeText(file.size)}: click to see it whole`;
  b.dataset.fileId = file.id;
  b.dataset.full = fileAddress(session, file, { token });
  b.dataset.name = file.name;
  const img = el("img");
  img.alt = file.name;
  img.dataset.thumb = fileAddress(session, file, { thumb: true });
  if (token) b.dataset.token = img.dataset.token = "1";
  if (!token || session.fileTokenNow) img.src = fileAddress(session, file, { thumb: true, token });
  if (file.width && file.height) {
    const scale = Math.min(1, THUMB_BOX / file.width, THUMB_BOX / file.height);
    img.width = Math.max(1, Math.round(file.width * scale));
    img.height = Math.max(1, Math.round(file.height * scale));
  }
  b.append(img);
  return b;
}

function card(session, file, token) {
  const box = el("div", "file card");
  box.dataset.fileId = file.id;
  box.append(el("span", "file-icon", "📄"), " ", el("span", "file-name", file.name), " ");
  box.append(el("span", "file-size", sizeText(file.size)), " ");
  const a = el("a", "download", "Download");
  a.href = fileAddress(session, file, { token });
  if (token) a.dataset.token = "1";
  a.download = file.name;
  a.rel = "noopener";
  a.title = `Download ${file.name} (${file.type})`;
  box.append(a);
  return box;
}

/** A new token: the private rooms' files shown take it (those waiting for
 * one load now; links and full images use the newest). */
export function retoken(session, container) {
  const token = session.fileTokenNow;
  if (!token) return;
  const withToken = (address) => {
    const url = new URL(address);
    url.searchParams.set("token", token);
    return url.href;
  };
  for (const img of container.querySelectorAll("img[data-token]")) {
    if (!img.getAttribute("src")) img.src = withToken(img.dataset.thumb);
  }
  for (const b of container.querySelectorAll("button.file.image[data-token]")) b.dataset.full = withToken(b.dataset.full);
  for (const a of container.querySelectorAll("a.download[data-token]")) a.href = withToken(a.href);
}

/** Files come from the attach button's input, a drop on the conversation
 * (marked while files are dragged over it) and a paste into the message
 * box (a screenshot); `take(files, pasted)` gets them. */
export function receiveFiles({ input, pane, box, take }) {
  input.addEventListener("change", () => {
    take([...input.files], false);
    input.value = ""; // the same file may be chosen again
  });
  const carriesFiles = (e) => [...(e.dataTransfer?.types ?? [])].includes("Files");
  pane.addEventListener("dragover", (e) => {
    if (!carriesFiles(e)) return;
    e.preventDefault();
    e.dataTransfer.dropEffect = "copy";
    pane.classList.add("dropping");
  });
  pane.addEventListener("dragleave", (e) => {
    if (!pane.contains(e.relatedTarget)) pane.classList.remove("dropping");
  });
  pane.addEventListener("drop", (e) => {
    pane.classList.remove("dropping");
    if (!carriesFiles(e)) return;
    e.preventDefault();
    take([...e.dataTransfer.files], false);
  });
  box.addEventListener("paste", (e) => {
    const files = [...(e.clipboardData?.files ?? [])];
    if (!files.length) return; // text: the box takes it
    e.preventDefault();
    take(files, true);
  });
}

/** A picture seen whole over the page: Escape, Close or a click beside
 * the caption closes it; its caption has the name and a download link. */
export class ImageOverlay {
  constructor(root) {
    this.root = root;
    this.image = root.querySelector("img");
    this.name = root.querySelector("#overlay-name");
    this.download = root.querySelector("#overlay-download");
    this.closer = root.querySelector("#overlay-close");
    this.closer.addEventListener("click", () => this.close());
    root.addEventListener("click", (e) => e.target.closest("figcaption") || this.close());
    document.addEventListener("keydown", (e) => e.key === "Escape" && !root.hidden && this.close());
  }

  open(address, name) {
    this.image.src = address;
    this.image.alt = name;
    this.name.textContent = name;
    this.download.href = address;
    this.download.download = name;
    this.root.hidden = false;
    this.closer.focus();
  }

  close() {
    this.root.hidden = true;
    this.image.removeAttribute("src");
  }
}
