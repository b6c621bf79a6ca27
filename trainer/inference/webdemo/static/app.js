// The demo page: send photos to POST /predict?annotate=1, show each annotated photo and one
// bar chart (SVG) of the class probabilities per face, in upload order; each upload replaces
// the previous results (an error clears them). Plain JS, no build step.
"use strict";

const statusLine = document.getElementById("status");
const results = document.getElementById("results");
const video = document.getElementById("camera");
const snapButton = document.getElementById("camera-snap");
let classNames = [];

function setStatus(text, isError = false) {
  statusLine.textContent = text;
  statusLine.classList.toggle("error", isError);
}

async function loadInfo() {
  const info = await (await fetch("/api/info")).json();
  classNames = info.class_names;
  document.getElementById("model-info").textContent =
    `Model ${info.model}: ${info.trained_on}. Detector ${info.detector}; up to ` +
    `${info.max_files} photos of ${Math.round(info.max_upload_bytes / 1048576)} MB per upload.`;
  const warning = document.getElementById("model-warning");
  warning.textContent = info.warning || "";
  warning.hidden = !info.warning;
}

async function analyse(files) {
  if (!files.length) return;
  const form = new FormData();
  for (const file of files) form.append("photo", file, file.name || "snapshot.jpg");
  setStatus(`Analysing ${files.length} photo(s)…`);
  results.replaceChildren();
  try {
    const response = await fetch("/predict?annotate=1", { method: "POST", body: form });
    const body = await response.json();
    if (!response.ok) throw new Error(body.error || response.statusText);
    showResults(body);
    const faces = body.filter((line) => "emotion" in line).length;
    const failed = body.filter((line) => "error" in line).length;
    setStatus(`${files.length} photo(s), ${faces} face(s)` +
              (failed ? `, ${failed} not read.` : "."), failed > 0);
  } catch (error) {
    setStatus(`Error: ${error.message}`, true);
  }
}

function showResults(lines) {
  const byPhoto = new Map();
  for (const line of lines) {
    if (!byPhoto.has(line.file)) byPhoto.set(line.file, []);
    byPhoto.get(line.file).push(line);
  }
  for (const [file, photoLines] of byPhoto) results.append(photoResult(file, photoLines));
}

function photoResult(file, lines) {
  const figure = document.createElement("figure");
  figure.className = "result";
  const caption = document.createElement("figcaption");
  if ("error" in lines[0]) {
    caption.textContent = `${file}: ${lines[0].error}`;
    caption.className = "error";
    figure.append(caption);
    return figure;
  }
  caption.textContent = `${file}: ${lines[0].faces} face(s)`;
  const image = document.createElement("img");
  image.className = "annotated";
  image.alt = `${file} with its faces marked`;
  image.src = lines[0].annotated;
  const faces = document.createElement("div");
  faces.className = "faces";
  for (const line of lines.filter((l) => "emotion" in l)) faces.append(faceChart(line));
  figure.append(caption, image, faces);
  return figure;
}

function svgElement(name, attributes) {
  const element = document.createElementNS("http://www.w3.org/2000/svg", name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, value);
  return element;
}

function faceChart(line) {
  const box = document.createElement("div");
  box.className = "face";
  const title = document.createElement("h3");
  title.textContent = `Face ${line.face + 1}: ${line.emotion} ${(line.probability * 100).toFixed(0)} %`;
  const names = classNames.length ? classNames : Object.keys(line.probabilities);
  const rowHeight = 20, labelWidth = 80, barWidth = 200;
  const chart = svgElement("svg", {
    class: "chart", width: labelWidth + barWidth + 50, height: names.length * rowHeight,
    role: "img", "aria-label": `probabilities of face ${line.face + 1}`,
  });
  names.forEach((name, row) => {
    const p = line.probabilities[name] ?? 0;
    const y = row * rowHeight;
    const label = svgElement("text", { x: 0, y: y + 14 });
    label.textContent = name;
    const bar = svgElement("rect", {
      class: name === line.emotion ? "bar top" : "bar", x: labelWidth, y: y + 3,
      width: Math.max(1, p * barWidth), height: rowHeight - 6, "data-class": name,
    });
    const value = svgElement("text", { x: labelWidth + p * barWidth + 4, y: y + 14 });
    value.textContent = `${(p * 100).toFixed(1)} %`;
    chart.append(label, bar, value);
  });
  box.append(title, chart);
  return box;
}

document.getElementById("photos").addEventListener("change", (event) => {
  analyse([...event.target.files]);
  event.target.value = "";
});

document.getElementById("camera-start").addEventListener("click", async () => {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    setStatus("This browser gives no camera access here (it needs https or localhost).", true);
    return;
  }
  try {
    video.srcObject = await navigator.mediaDevices.getUserMedia({ video: true, audio: false });
    video.hidden = false;
    snapButton.hidden = false;
    setStatus("Camera on: take a snapshot.");
  } catch (error) {
    setStatus(`No camera: ${error.message}`, true);
  }
});

snapButton.addEventListener("click", () => {
  const canvas = document.createElement("canvas");
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  canvas.getContext("2d").drawImage(video, 0, 0);
  canvas.toBlob((blob) => {
    analyse([new File([blob], "snapshot.jpg", { type: "image/jpeg" })]);
  }, "image/jpeg", 0.92);
});

loadInfo().catch((error) => setStatus(`Cannot reach the server: ${error.message}`, true));
