# LiverPlan for Windows: the frozen bundle (PyInstaller) and the Inno Setup installer. NOT built on the
# project's Linux machines; run by .github/workflows/installers.yml on a windows-2022 runner.
#   powershell -File installer\windows\build_windows.ps1 [-Python python]
param([string]$Python = "python")
$ErrorActionPreference = "Stop"
$Root = Resolve-Path "$PSScriptRoot\..\.."
Set-Location $Root
$Version = (Select-String -Path pyproject.toml -Pattern '^version\s*=\s*"([^"]+)"').Matches[0].Groups[1].Value
Remove-Item -Recurse -Force build\installer, dist\LiverPlan-*-Setup* -ErrorAction SilentlyContinue
& $Python -m PyInstaller --noconfirm --log-level WARN --distpath build\installer\bundle --workpath build\installer\work installer\liverplan.spec
if ($LASTEXITCODE -ne 0) { throw "PyInstaller failed" }
& build\installer\bundle\liverplan\liverplan.exe --self-test
if ($LASTEXITCODE -ne 0) { throw "the frozen self-test failed" }
& $Python installer\icon\make_icon.py build\icon
$iscc = "${env:ProgramFiles(x86)}\Inno Setup 6\ISCC.exe"
& $iscc "/DAppVersion=$Version" "/DBundleDir=$Root\build\installer\bundle\liverplan" "/DIconFile=$Root\build\icon\liverplan.ico" "/O$Root\dist" installer\windows\liverplan.iss
if ($LASTEXITCODE -ne 0) { throw "Inno Setup failed" }
Get-ChildItem dist\LiverPlan-$Version-Setup* | Format-Table Name, Length
