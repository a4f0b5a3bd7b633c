// The draw-a-digit page: draw or upload, send the image to this page's app, show the answer.
// Plain browser APIs only (Pointer Events, canvas, fetch); the app holds TorchServe's key.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const pad = $("pad");
  const ctx = pad.getContext("2d");
  // About MNIST's pen: a 2-3 px stroke on a 28 px digit is a tenth of the pad's width.
  const STROKE_WIDTH = pad.width / 14;
  const HEALTH_READY_MS = 10000; // how often to look at the server while all is well
  const HEALTH_RETRY_MS = 1000; // ... and while it is down or starting

  // Measurement and test hook: `timings` holds, per stroke answered, the milliseconds from the
  // stroke's end (pointerup) to the frame that shows its answer, and `phases` where they went
  // (PNG encoding, the round trip to the app, until painted); `answers` counts answers shown.
  const lenet = (window.lenet = { timings: [], phases: [], answers: 0, refusals: 0 });

  let stroke = null; // {id, x, y} of the pointer drawing now
  let padHoldsUpload = false; // the pad shows an uploaded picture: the next stroke starts afresh
  let generation = 0; // bumped by Clear: answers to older requests are dropped
  let inFlight = false;
  let queued = null; // the newest input that arrived while a request was in flight
  let retryInput = null; // the input an outage left unanswered; re-sent when the server is back
  let healthTimer = null;

  // --- drawing ---------------------------------------------------------------------------
  function clearPad() {
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, pad.width, pad.height);
    padHoldsUpload = false;
  }

  function padPoint(event) {
    const box = pad.getBoundingClientRect();
    return {
      x: ((event.clientX - box.left) * pad.width) / box.width,
      y: ((event.clientY - box.top) * pad.height) / box.height,
    };
  }

  function inkTo(p) {
    ctx.strokeStyle = "#000";
    ctx.lineWidth = STROKE_WIDTH;
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    ctx.beginPath();
    ctx.moveTo(stroke.x, stroke.y);
    ctx.lineTo(p.x, p.y);
    ctx.stroke();
    stroke.x = p.x;
    stroke.y = p.y;
  }

  pad.addEventListener("pointerdown", (event) => {
    if (stroke !== null || (event.pointerType === "mouse" && event.button !== 0)) return;
    event.preventDefault();
    if (padHoldsUpload) clearPad();
    pad.setPointerCapture(event.pointerId);
    const p = padPoint(event);
    stroke = { id: event.pointerId, x: p.x, y: p.y };
    inkTo({ x: p.x + 0.01, y: p.y }); // a tap leaves a dot
  });

  pad.addEventListener("pointermove", (event) => {
    if (stroke === null || event.pointerId !== stroke.id) return;
    const samples = event.getCoalescedEvents ? event.getCoalescedEvents() : [];
    for (const sample of samples.length ? samples : [event]) inkTo(padPoint(sample));
  });

  // What a drawing sends: the pad at SEND_SIZE px, a PNG. The server preprocesses any picture
  // (centring, scaling to 28x28) and its work grows with the pixel count: 4x MNIST's resolution
  // keeps every detail the 28x28 input can hold at a sixth of the full pad's pixels.
  const SEND_SIZE = 112;
  const sendCanvas = document.createElement("canvas");
  sendCanvas.width = SEND_SIZE;
  sendCanvas.height = SEND_SIZE;

  function padImage() {
    const g = sendCanvas.getContext("2d");
    g.imageSmoothingQuality = "high";
    g.drawImage(pad, 0, 0, SEND_SIZE, SEND_SIZE);
    // toDataURL encodes now; toBlob may wait up to a second for the browser to be idle.
    const url = sendCanvas.toDataURL("image/png");
    const text = atob(url.slice(url.indexOf(",") + 1));
    const bytes = new Uint8Array(text.length);
    for (let i = 0; i < text.length; i += 1) bytes[i] = text.charCodeAt(i);
    return new Blob([bytes], { type: "image/png" });
  }

  function endStroke(event) {
    if (stroke === null || event.pointerId !== stroke.id) return;
    const strokeEnd = performance.now();
    stroke = null;
    submit({ blob: padImage(), strokeEnd, encoded: performance.now() });
  }
  pad.addEventListener("pointerup", endStroke);
  pad.addEventListener("pointercancel", endStroke);

  $("clear").addEventListener("click", () => {
    generation += 1;
    queued = null;
    retryInput = null;
    clearPad();
    showPrediction(null);
    showExplanation(null, "");
    hideMessage();
    $("hint").textContent = "Write one digit. The answer updates when you lift the pen.";
  });

  // --- uploads -----------------------------------------------------------------------------
  function onFile(event) {
    const file = event.target.files[0];
    if (!file) return;
    event.target.value = ""; // picking the same file again must send it again
    $("hint").textContent = `Sent ${file.name} (${file.size.toLocaleString()} bytes).`;
    preview(file);
    submit({ blob: file, strokeEnd: null });
  }
  $("upload").addEventListener("change", onFile);
  $("camera").addEventListener("change", onFile);

  function preview(file) {
    clearPad();
    padHoldsUpload = true;
    createImageBitmap(file)
      .then((bitmap) => {
        const scale = Math.min(pad.width / bitmap.width, pad.height / bitmap.height);
        const w = bitmap.width * scale;
        const h = bitmap.height * scale;
        ctx.drawImage(bitmap, (pad.width - w) / 2, (pad.height - h) / 2, w, h);
      })
      .catch(() => {}); // not a picture the browser can show: the server says what is wrong
  }

  // --- talking to the app --------------------------------------------------------------------
  function submit(input) {
    if (inFlight) {
      queued = input; // only the newest drawing matters
      return;
    }
    send(input);
  }

  async function send(input) {
    inFlight = true;
    const sentIn = generation;
    const sentAt = performance.now();
    let response = null;
    let body = null;
    try {
      response = await fetch("api/predict", {
        method: "POST",
        body: input.blob,
        headers: { "Content-Type": input.blob.type || "application/octet-stream" },
        cache: "no-store",
      });
      body = await response.json().catch(() => ({ message: `HTTP ${response.status}` }));
    } catch (error) {
      body = { server: "down", message: "This page's server is not answering; retrying…" };
    }
    inFlight = false;
    input.roundTrip = performance.now() - sentAt;
    if (sentIn === generation) {
      if (response && response.ok) showAnswer(body, input);
      else showFailure(response, body, input);
    }
    if (queued) {
      const next = queued;
      queued = null;
      send(next);
    }
  }

  function showAnswer(body, input) {
    retryInput = null;
    hideMessage();
    setServer("ready");
    showPrediction(body.prediction);
    showExplanation(body.explanation, body.explanation_note);
    if (body.model && body.model.name) {
      $("model-name").textContent = body.model.name;
      $("model-version").textContent = body.model.version ? `v${body.model.version}` : "";
    }
    // The next frame is the one that paints this answer: that is when the person sees it.
    const rendered = performance.now();
    requestAnimationFrame(() => {
      const shown = performance.now();
      if (input.strokeEnd !== null) {
        lenet.timings.push(shown - input.strokeEnd);
        lenet.phases.push({
          encode: input.encoded - input.strokeEnd,
          other: rendered - input.encoded - input.roundTrip, // queued, parsing, updating
          roundTrip: input.roundTrip,
          paint: shown - rendered,
        });
      }
      lenet.answers += 1;
    });
  }

  function showFailure(response, body, input) {
    const server = body.server || (response && response.status >= 500 ? "starting" : "ready");
    if (server !== "ready") {
      // The server is away: say so, keep the input and send it again when it is back.
      retryInput = { blob: input.blob, strokeEnd: null };
      setServer(server);
      showMessage("server", body.message || "The model server is not answering; retrying…");
      watchHealth(HEALTH_RETRY_MS);
      return;
    }
    // The API refused this image: show its own words; the page stays as usable as before.
    lenet.refusals += 1;
    showPrediction(null);
    showExplanation(null, "");
    showMessage("refused", `The server refused this image: ${body.message || `HTTP ${response.status}`}`);
  }

  // --- the server's state: polled, so that the page recovers by itself ------------------------
  async function pollHealth() {
    let state = "down";
    let message = "This page's server is not answering; retrying…";
    try {
      const response = await fetch("api/health", { cache: "no-store" });
      const body = await response.json();
      state = body.torchserve;
      message = body.message;
    } catch (error) {
      // the app itself is away: keep the defaults
    }
    setServer(state);
    if (state === "ready") {
      if ($("message").dataset.kind === "server") hideMessage();
      if (retryInput) {
        const input = retryInput;
        retryInput = null;
        submit(input); // the answer the outage withheld
      }
    } else {
      showMessage("server", message);
    }
    watchHealth(state === "ready" ? HEALTH_READY_MS : HEALTH_RETRY_MS);
  }

  function watchHealth(delay) {
    clearTimeout(healthTimer);
    healthTimer = setTimeout(pollHealth, delay);
  }

  function setServer(state) {
    const el = $("server");
    el.dataset.state = state;
    el.textContent = {
      ready: "model server ready",
      starting: "model server starting…",
      down: "model server down",
    }[state] || "checking the model server…";
  }

  function showMessage(kind, text) {
    const el = $("message");
    el.dataset.kind = kind;
    el.textContent = text;
    el.hidden = false;
  }

  function hideMessage() {
    const el = $("message");
    el.hidden = true;
    el.textContent = "";
    delete el.dataset.kind;
  }

  // --- output --------------------------------------------------------------------------------
  const bars = [];
  for (let digit = 0; digit < 10; digit += 1) {
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.innerHTML = '<div class="fill"></div><div class="label"></div>';
    bar.querySelector(".label").textContent = String(digit);
    $("bars").appendChild(bar);
    bars.push(bar);
  }

  function showPrediction(prediction) {
    $("digit").textContent = prediction ? String(prediction.digit) : "?";
    $("confidence").textContent = prediction
      ? `${(prediction.confidence * 100).toFixed(1)} % sure`
      : "";
    bars.forEach((bar, digit) => {
      const p = prediction ? prediction.probabilities[digit] : 0;
      bar.querySelector(".fill").style.height = `${(p * 100).toFixed(1)}%`;
      bar.classList.toggle("top", Boolean(prediction) && digit === prediction.digit);
      bar.title = `${digit}: ${(p * 100).toFixed(2)} %`;
    });
  }

  // The two panels of an explanation (web/explanations.py): the 28x28 PNG the model saw and
  // its 28x28 attribution values; without one, both say "not available" and the note says why.
  function showExplanation(explanation, note) {
    const shown = Boolean(explanation);
    toggle("model-input", shown, "model-input-na");
    toggle("attribution", shown, "attribution-na");
    if (shown) {
      $("model-input").src = `data:image/png;base64,${explanation.input_png}`;
      drawAttribution(explanation.attribution);
    }
    $("explanation-note").textContent =
      shown || !note ? "" : `Model input and attribution map: ${note}.`;
  }

  function toggle(id, visible, placeholderId) {
    $(id).hidden = !visible;
    $(placeholderId).hidden = visible;
  }

  // Signed attributions as colour: red where a pixel pushed towards the answer, blue against.
  // The square root lifts the many small values next to a few strong ones into view.
  function drawAttribution(values) {
    const canvas = $("attribution");
    const g = canvas.getContext("2d");
    const size = values.length;
    const image = g.createImageData(size, size);
    const peak = Math.max(1e-12, ...values.flat().map(Math.abs));
    values.flat().forEach((v, i) => {
      const t = Math.sqrt(Math.min(1, Math.abs(v) / peak));
      image.data[4 * i] = v > 0 ? 255 * t : 0;
      image.data[4 * i + 2] = v < 0 ? 255 * t : 0;
      image.data[4 * i + 3] = 255;
    });
    g.putImageData(image, 0, 0);
  }

  clearPad();
  showPrediction(null);
  pollHealth();
})();
