// Upload photos on the demo page in Firefox (WebDriver BiDi via puppeteer-core) and print what
// each card shows, as JSON. Usage: node check.mjs URL API_KEY SCREENSHOT PHOTO [PHOTO...]
import puppeteer from "puppeteer-core";

const [url, key, screenshot, ...photos] = process.argv.slice(2);
const browser = await puppeteer.launch({
  browser: "firefox",
  executablePath: process.env.AURUM_FIREFOX || "/usr/bin/firefox-esr",
  headless: true,
  args: ["--no-remote"],
  extraPrefsFirefox: { "network.proxy.type": 0, "app.update.enabled": false, "browser.shell.checkDefaultBrowser": false },
});
try {
  const page = await browser.newPage();
  await page.setViewport({ width: 1200, height: 900 });
  await page.goto(url, { waitUntil: "load" });
  await page.type("#api-key", key);
  await page.$eval("#api-key", (el) => el.dispatchEvent(new Event("change")));
  const input = await page.$("#photos");
  await input.uploadFile(...photos);
  await page.waitForFunction(
    (n) => document.querySelectorAll(".card .state[data-state=done], .card .state[data-state=failed]").length === n,
    { timeout: 30000, polling: 100 }, photos.length);
  const cards = await page.$$eval(".card", (cards) => cards.map((c) => ({
    state: c.querySelector(".state").textContent,
    error: c.querySelector(".error").hidden ? null : c.querySelector(".error").dataset.code,
    faces: c.querySelectorAll(".faces li").length,
    canvas: [c.querySelector("canvas").width, c.querySelector("canvas").height],
  })));
  await page.screenshot({ path: screenshot, fullPage: true });
  console.log(JSON.stringify(cards));
} finally {
  await browser.close();
}
